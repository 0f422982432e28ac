"""Train (prune / continue pre-training) from a yaml with omegaconf dot-list overrides.

    llmshearing train CONFIG.yaml [key=value ...]
    composer -n 8 -m llmshearing train CONFIG.yaml [key=value ...]    # one process per GPU
    composer train.py CONFIG.yaml [key=value ...]                     # the same, as Composer users start runs

Bad input gives one ``error: ...`` line and exit code 2 before training starts; a NaN/inf loss
stops the run with exit code 3.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from llmshearing.cli.command import command_parser, run_cli

DEFAULT_PROG = "train.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run yaml (see yamls/)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="omegaconf dot-list overrides, e.g. max_duration=10ba data.path=DIR")
    parser.set_defaults(work=train)


def fit(cfg) -> Optional[str]:
    """Train as the config says; returns the run's checkpoint folder (None when it saves none)."""
    from composer.utils import format_name_with_dist

    from llmshearing.training import build_trainer

    trainer = build_trainer(cfg)
    trainer.fit()
    return format_name_with_dist(cfg.save_folder, trainer.state.run_name) if cfg.save_folder else None


def train(args: argparse.Namespace) -> None:
    from llmshearing.config import load_config

    folder = fit(load_config(args.config, args.overrides))
    if folder:
        print(f"run finished; checkpoints in {folder}")


def main(argv: Optional[Sequence[str]] = None, prog: str = DEFAULT_PROG) -> int:
    # Composer's Trainer sets up logging for the run (each line tagged with its rank)
    return run_cli(command_parser(prog, __doc__, add_arguments), argv, progress_logs=False)
