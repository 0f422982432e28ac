"""Dispatcher for `python -m llmshearing.prune METHOD`; methods register by name.

A method module provides ``add_arguments(parser)`` and ``run(args) -> Path`` (the exported HF
model dir, printed as the last line). Common options (model, data, output, calibration set) are
added here once.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from llmshearing.devices import add_device_argument
from llmshearing.errors import LLMShearingError, ShapeError

METHODS = {
    "minitron": "llmshearing.minitron.cli",
    "surgeon": "llmshearing.surgeon.cli",
}
EXIT_BAD_INPUT = 2


def parse_target(text: str) -> dict:
    """'hidden_size=384,num_attention_heads=6' -> {'hidden_size': 384, 'num_attention_heads': 6}."""
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ShapeError(f"target item '{item}' is not key=value")
        try:
            values[key.strip()] = int(value)
        except ValueError as exc:
            raise ShapeError(f"target {key.strip()}={value!r} is not an integer") from exc
    return values


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="source: HF dir, .gguf file or Composer checkpoint")
    parser.add_argument("--data", required=True, help="corpus dir (data_prep/build_sample_corpus.py)")
    parser.add_argument("--out", required=True, help="output HF model dir")
    parser.add_argument("--calib-samples", type=int, default=1024, help="calibration sequences (paper: 1024)")
    parser.add_argument("--seq-len", type=int, default=None, help="calibration sequence length (default: corpus's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser)
    parser.add_argument("--tokenizer", default=None, help="tokenizer to save with the output (default: the source's)")


def load_output_tokenizer(args: argparse.Namespace):
    """--tokenizer, else the source's own (HF dir or .gguf); None, with a warning, when it has none."""
    from llmshearing.assets import load_tokenizer

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    try:
        return load_tokenizer(args.model)
    except LLMShearingError as exc:
        print(f"warning: exporting without a tokenizer ({str(exc).splitlines()[0]}); pass --tokenizer PATH",
              file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmshearing.prune", description=__doc__.splitlines()[0])
    methods = parser.add_subparsers(dest="method", required=True)
    for name, module_name in METHODS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # method not installed in this version
            raise
        sub = methods.add_parser(name, help=module.__doc__.strip().splitlines()[0] if module.__doc__ else name)
        add_common_arguments(sub)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.run(args)
    except (LLMShearingError, FileNotFoundError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(out)
    return 0
