"""``python -m llmshearing.eval MODEL --data DIR --out results.json``: per-domain loss and perplexity.

MODEL is a Hugging Face model directory, a .gguf file, a Composer checkpoint (a pruning run's
checkpoint is scored without its masks: slice it first with ``composer-to-hf --prune``) or
``smollm2``. Every domain's loss is the mean next-token NLL over its predicted tokens; "all" pools
the tokens of every domain (see ``llmshearing/eval/perplexity.py``). The table goes to stdout and
its last line is the output path; bad input gives one ``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from llmshearing.devices import add_device_argument
from llmshearing.errors import LLMShearingError

EXIT_BAD_INPUT = 2
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
WEIGHTING = ("token-weighted: a domain's loss is its summed next-token NLL over its predicted tokens; "
             "'all' pools every domain's tokens; perplexity = exp(loss)")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m llmshearing.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="HF model dir, .gguf file, Composer checkpoint or 'smollm2'")
    parser.add_argument("--data", required=True, help="corpus dir (<domain>/<split> MDS folders + manifest.json)")
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--split", default="eval", help="split to score (default: eval)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="at most this many tokens per domain (whole samples, the first ones)")
    parser.add_argument("--domains", nargs="+", help="default: every domain of the corpus")
    parser.add_argument("--seq-len", type=int, help="default: the corpus's sample length")
    parser.add_argument("--batch-size", type=int, default=8)
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    return parser.parse_args(argv)


def model_tokenizer(path: str):
    """The tokenizer shipped with an HF dir or GGUF, or None (Composer checkpoints carry none)."""
    from llmshearing.assets import load_tokenizer

    p = Path(path)
    shipped = p.suffix == ".gguf" or (p.is_dir() and any((p / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")))
    return load_tokenizer(p) if shipped else None


def evaluate(args) -> dict:
    from llmshearing.convert.sources import detect_format, load_model
    from llmshearing.data.corpus import load_manifest
    from llmshearing.eval.inputs import check_vocabulary, checked_domains
    from llmshearing.eval.perplexity import ALL, evaluate_domains, format_table
    from llmshearing.training import resolve_model_path

    if args.max_tokens is not None and args.max_tokens < 1:
        raise LLMShearingError(f"--max-tokens must be positive, got {args.max_tokens}")
    path = resolve_model_path(args.model)
    kind = detect_format(path)
    domains = checked_domains(args.data, args.split, args.domains)
    seq_len = args.seq_len or int(load_manifest(args.data)["seq_len"])
    model = load_model(path, dtype=DTYPES[args.dtype])
    check_vocabulary(model.config.vocab_size, args.data, model_tokenizer(path))
    max_samples = None if args.max_tokens is None else max(1, args.max_tokens // seq_len)
    started = time.time()
    results = evaluate_domains(model.model.to(args.device), args.data, domains, seq_len=seq_len,
                               batch_size=args.batch_size, max_samples=max_samples, split=args.split)
    print(format_table(results))
    return {
        "model": str(args.model), "format": kind, "data": str(args.data), "split": args.split, "seq_len": seq_len,
        "parameters": sum(p.numel() for p in model.model.parameters()),
        "total_tokens": results[ALL].tokens,
        "weighting": WEIGHTING,
        "domains": {d: r.to_dict() for d, r in results.items() if d != ALL},
        ALL: results[ALL].to_dict(),
        "seconds": round(time.time() - started, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        payload = evaluate(args)
    except (LLMShearingError, FileNotFoundError) as exc:
        message = str(exc).splitlines()[0] if str(exc).strip() else repr(exc)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"{payload['parameters'] / 1e6:.1f}M parameters, {payload['total_tokens']} tokens scored")
    print(args.out)
    return 0
