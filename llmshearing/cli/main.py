"""`llmshearing COMMAND ...` (also `python -m llmshearing`): one front door to every tool.

Each command is the ``main(argv, prog)`` of the module that has done the job all along (so the old
``python -m llmshearing.<module>`` spellings stay), imported only when it is the one asked for.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from typing import NamedTuple, Optional, Sequence

from llmshearing.cli.command import CommandParser, parsing_only


class Command(NamedTuple):
    entry: str  # "module:function", called as function(argv, prog=...)
    summary: str


COMMANDS = {
    "prepare": Command("llmshearing.data.prepare.cli:main",
                       "tokenize your own text into the per-domain corpus every command reads"),
    "train": Command("llmshearing.cli.train:main",
                     "prune or continue pre-training from a yaml (+ key=value overrides), like train.py"),
    "prune": Command("llmshearing.prune.cli:main",
                     "sheared | minitron | surgeon: prune a model, write a Hugging Face model"),
    "export": Command("llmshearing.convert.cli:export_main",
                      "Composer checkpoint -> Hugging Face model (--prune: sliced with its L0 masks)"),
    "import": Command("llmshearing.convert.cli:import_main", "Hugging Face model or .gguf -> Composer checkpoint"),
    "eval": Command("llmshearing.eval.cli:main", "per-domain loss and perplexity on a corpus"),
    "reference-loss": Command("llmshearing.dynamic_loading.reference_loss:main",
                              "a model's per-domain loss, the targets of dynamic batch loading"),
    "demo": Command("llmshearing.cli.demo:main", "the whole pipeline on SmolLM2-135M, on CPU, in minutes"),
}
PROG = "llmshearing"
EPILOG = f"""\
'{PROG} COMMAND --help' shows a command's options. Several GPUs: composer -n 8 -m llmshearing train ...

Exit codes: 0 done, 1 the work could not finish, 2 bad input (one 'error: ...' line), 3 NaN/inf
training loss, 130 interrupted."""


def overview_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog=PROG, description="Structured pruning of LLMs: Sheared LLaMA, Minitron, LLM Surgeon.",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        overview = overview_parser()
        overview.parse_args(argv[:1])  # --help prints the overview and exits; any other option is an error
        overview.error("give a command")
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        nearest = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean '{nearest[0]}'?" if nearest else f" (choose from {', '.join(COMMANDS)})"
        overview_parser().error(f"unknown command '{name}'{hint}")
    module_name, function = COMMANDS[name].entry.split(":")
    return getattr(importlib.import_module(module_name), function)(rest, prog=f"{PROG} {name}")


def parse_command(argv: Sequence[str]) -> argparse.Namespace:
    """``llmshearing ARGV`` parsed by the command's own parser, without doing the work. An argument
    error raises SystemExit(2) after its one-line ``error:`` message, as the command would."""
    with parsing_only() as parsed:
        main(argv)
    return parsed[-1]
