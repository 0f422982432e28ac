"""Per-domain loss and perplexity of a model on a corpus's held-out split.

    llmshearing eval MODEL --data DIR --out results.json      (also: python -m llmshearing.eval)

MODEL is a Hugging Face model directory, a .gguf file, a Composer checkpoint (a pruning run's
checkpoint is scored without its masks: slice it first with ``llmshearing export --prune``) or
``smollm2``. Every domain's loss is the mean next-token NLL over its predicted tokens; "all" pools
the tokens of every domain (see ``llmshearing/eval/perplexity.py``). The table goes to stdout, a
row as each domain is scored, and its last line is the output path; bad input gives one
``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional, Sequence

from llmshearing.cli.command import command_parser, run_cli
from llmshearing.devices import add_device_argument, chosen_device, torch_dtype
from llmshearing.assets import resolve_model_path
from llmshearing.errors import LLMShearingError
from llmshearing.tokenizer_files import model_tokenizer_path

DTYPE_NAMES = ("bfloat16", "float32")
DEFAULT_PROG = "python -m llmshearing.eval"
WEIGHTING = ("token-weighted: a domain's loss is its summed next-token NLL over its predicted tokens; "
             "'all' pools every domain's tokens; perplexity = exp(loss)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.set_defaults(work=evaluate_and_write)


def model_tokenizer(path: str):
    """The model's tokenizer (an HF dir's, a GGUF's, the one beside a Composer checkpoint), or None."""
    from llmshearing.assets import load_tokenizer

    tokenizer_path = model_tokenizer_path(path)
    return None if tokenizer_path is None else load_tokenizer(tokenizer_path)


def scored_domains(model, args, domains, seq_len: int, max_samples: Optional[int]) -> dict:
    """{domain: DomainResult, ..., "all": pooled}; each domain's table row is printed as soon as it is scored."""
    from llmshearing.eval.perplexity import ALL, evaluate_domains, format_table, pooled_result

    def print_row(name: str, with_header: bool = False) -> None:
        lines = format_table({name: results[name]}).splitlines()
        print("\n".join(lines if with_header else lines[1:]), flush=True)

    results = {}
    for domain in domains:
        results[domain] = evaluate_domains(model, args.data, [domain], seq_len=seq_len, batch_size=args.batch_size,
                                           max_samples=max_samples, split=args.split)[domain]
        print_row(domain, with_header=len(results) == 1)
    results[ALL] = pooled_result({domain: (r.loss * r.tokens, r.tokens) for domain, r in results.items()})
    print_row(ALL)
    return results


def evaluate(args) -> dict:
    from llmshearing.convert.sources import detect_format, load_model
    from llmshearing.data.corpus import load_manifest
    from llmshearing.eval.inputs import check_vocabulary, checked_domains
    from llmshearing.eval.perplexity import ALL

    if args.max_tokens is not None and args.max_tokens < 1:
        raise LLMShearingError(f"--max-tokens must be positive, got {args.max_tokens}")
    path = resolve_model_path(args.model)  # the file a shortcut names, for the results' "format"
    kind = detect_format(path)
    domains = checked_domains(args.data, args.split, args.domains)
    seq_len = args.seq_len or int(load_manifest(args.data)["seq_len"])
    model = load_model(path, dtype=torch_dtype(args.dtype))
    check_vocabulary(model.config.vocab_size, args.data, model_tokenizer(path))
    max_samples = None if args.max_tokens is None else max(1, args.max_tokens // seq_len)
    started = time.time()
    results = scored_domains(model.to(chosen_device(args.device)), args, domains, seq_len, max_samples)
    return {
        "model": str(args.model), "format": kind, "data": str(args.data), "split": args.split, "seq_len": seq_len,
        "parameters": sum(p.numel() for p in model.parameters()),
        "total_tokens": results[ALL].tokens,
        "weighting": WEIGHTING,
        "domains": {d: r.to_dict() for d, r in results.items() if d != ALL},
        ALL: results[ALL].to_dict(),
        "seconds": round(time.time() - started, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def evaluate_and_write(args: argparse.Namespace) -> None:
    payload = evaluate(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"{payload['parameters'] / 1e6:.1f}M parameters, {payload['total_tokens']} tokens scored")
    print(args.out)


def main(argv: Optional[Sequence[str]] = None, prog: str = DEFAULT_PROG) -> int:
    return run_cli(command_parser(prog, __doc__, add_arguments), argv)
