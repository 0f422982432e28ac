"""Sheared LLaMA: L0 masks learn what to keep for a target shape in a short training run, then slice the model.

    llmshearing prune sheared --model SRC --data DIR --out DST \\
        --target hidden_size=2048,num_attention_heads=16,num_key_value_heads=16,num_hidden_layers=24,intermediate_size=5504 \\
        [--steps N] [key=value ...]
    composer -n 8 -m llmshearing prune sheared ...     # one process per GPU

The run is `llmshearing train` on --config (default yamls/sheared.yaml, the paper's pruning recipe)
with model.path, data.path, pruning.target and save_folder filled in; any other yaml key takes a
key=value override (e.g. data.seq_len=512). Then the final masks slice the last checkpoint and DST
receives the HF model, as `llmshearing export CHECKPOINT DST --prune` writes it. The checkpoints,
plots and pruning_plan.json stay in --save-folder (default: DST-run). Continued pre-training of
DST is a second run: `llmshearing train yamls/continue_pretrain_*.yaml model.path=DST ...`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from llmshearing.prune.cli import add_source_arguments
from llmshearing.recipes import RECIPES

DEFAULT_CONFIG = RECIPES / "sheared.yaml"
LATEST_CHECKPOINT = "latest-rank0.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--target", required=True,
                        help="target shape in HF config words, e.g. hidden_size=384,num_attention_heads=6,"
                        "num_key_value_heads=3,num_hidden_layers=24,intermediate_size=1024 (missing keys: the "
                        "yaml's, else unchanged)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="the run's yaml (default: %(default)s)")
    parser.add_argument("--save-folder", help="the run's checkpoints (default: DST-run)")
    parser.add_argument("--steps", type=int, help="pruning steps (default: the yaml's max_duration)")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="yaml overrides, after the options above")


def run_overrides(args: argparse.Namespace) -> List[str]:
    """The dot-list that turns the yaml into this run; the user's own overrides come last and win."""
    from llmshearing.prune.cli import parse_target

    overrides = [f"model.path={args.model}", f"data.path={args.data}",
                 f"save_folder={args.save_folder or f'{args.out}-run'}"]
    overrides += [f"pruning.target.{key}={value}" for key, value in parse_target(args.target).items()]
    if args.steps:
        overrides.append(f"max_duration={args.steps}ba")
    return overrides + list(args.overrides)


def run(args: argparse.Namespace) -> Optional[Path]:
    from composer.utils import dist

    from llmshearing.cli.train import fit
    from llmshearing.config import load_config
    from llmshearing.convert.cli import composer_to_hf
    from llmshearing.errors import ConfigError

    cfg = load_config(args.config, run_overrides(args))
    if cfg.pruning is None:
        raise ConfigError(f"{args.config} has no pruning section: it is not a pruning run")
    if not cfg.save_folder or "://" in cfg.save_folder:
        raise ConfigError(f"save_folder is {cfg.save_folder}: the export reads the run's last checkpoint from a "
                          "local folder (give a local --save-folder)")
    folder = fit(cfg)
    if dist.get_global_rank() != 0:
        return None  # rank 0 exports
    return composer_to_hf(Path(folder) / LATEST_CHECKPOINT, Path(args.out), prune=True, tokenizer_path=args.tokenizer)
