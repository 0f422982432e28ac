"""Prune a model to a smaller one and write it as a Hugging Face model dir (printed as the last line).

    llmshearing prune METHOD --model SRC --data DIR --out DST ...    (also: python -m llmshearing.prune)
    llmshearing prune METHOD --help                                  the method's own options
"""
from __future__ import annotations

import argparse
import importlib
from typing import Callable, Optional, Sequence

from llmshearing.cli.command import command_parser, run_cli
from llmshearing.devices import add_device_argument
from llmshearing.errors import ShapeError

# A method module provides add_arguments(parser) and run(args) -> Path (None on the other ranks of a
# multi-GPU run), and is light to import: torch comes in with run, so --help answers at once.
METHODS = {
    "sheared": "llmshearing.sheared.cli",
    "minitron": "llmshearing.minitron.cli",
    "surgeon": "llmshearing.surgeon.cli",
}
DEFAULT_PROG = "python -m llmshearing.prune"


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


def format_target(target: dict) -> str:
    """The inverse of :func:`parse_target`: the ``--target`` text of a target mapping."""
    return ",".join(f"{k}={v}" for k, v in target.items())


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """What every method reads and writes."""
    parser.add_argument("--model", required=True, help="source: HF dir, .gguf file, Composer checkpoint or 'smollm2'")
    parser.add_argument("--data", required=True, help="corpus dir (llmshearing prepare)")
    parser.add_argument("--out", required=True, help="output HF model dir")
    parser.add_argument("--tokenizer", default=None, help="tokenizer to save with the output (default: the source's)")


def add_calibration_arguments(parser: argparse.ArgumentParser) -> None:
    """The one-shot methods' calibration set."""
    parser.add_argument("--calib-samples", type=int, default=1024, help="calibration sequences (paper: 1024)")
    parser.add_argument("--seq-len", type=int, default=None, help="calibration sequence length (default: corpus's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser)


def load_output_tokenizer(args: argparse.Namespace):
    """--tokenizer, else the source's own (HF dir, .gguf, beside a Composer checkpoint); None, with a
    warning, when it has none."""
    from llmshearing.assets import load_tokenizer
    from llmshearing.tokenizer_files import load_source_tokenizer

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    return load_source_tokenizer(args.model,
                                 lambda reason: f"exporting without a tokenizer ({reason}); pass --tokenizer PATH")


def printing_output(run: Callable[[argparse.Namespace], object]) -> Callable[[argparse.Namespace], None]:
    """The method's run, then its output dir as the last line (none on the other ranks of a multi-GPU run)."""
    def work(args: argparse.Namespace) -> None:
        out = run(args)
        if out is not None:
            print(out)
    return work


def add_arguments(parser: argparse.ArgumentParser) -> None:
    methods = parser.add_subparsers(dest="method", required=True, metavar="METHOD")
    for name, module_name in METHODS.items():
        module = importlib.import_module(module_name)
        summary = module.__doc__.strip().splitlines()[0]
        sub = methods.add_parser(name, help=summary, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(work=printing_output(module.run))


def main(argv: Optional[Sequence[str]] = None, prog: str = DEFAULT_PROG) -> int:
    return run_cli(command_parser(prog, __doc__, add_arguments), argv)
