"""HF/GGUF → Composer checkpoint (``llmshearing import``), Composer checkpoint → HF (``llmshearing export``).

    llmshearing import SRC DST
    llmshearing export SRC DST [--prune] [--tokenizer PATH]
    python -m llmshearing.convert hf-to-composer|composer-to-hf ...     # the same, older spelling

Progress goes to stdout and its last line is the output path; warnings go to stderr. Bad input
gives one ``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from llmshearing.cli.command import CommandParser, command_parser, run_cli
from llmshearing.devices import torch_dtype
from llmshearing.errors import CheckpointError
from llmshearing.tokenizer_files import (TOKENIZER_DIR, checkpoint_tokenizer_dir, load_source_tokenizer,
                                         tokenizer_beside)

DTYPE_NAMES = ("bfloat16", "float16", "float32")
DEFAULT_PROG = "python -m llmshearing.convert"


def _say(message: str) -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _describe(config) -> str:
    from llmshearing.shape import config_parameters

    def sizes(per_layer, uniform) -> str:
        return f"{min(per_layer)}-{max(per_layer)}" if per_layer else str(uniform)

    return (f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
            f"{sizes(config.num_attention_heads_per_layer, config.num_attention_heads)} heads / "
            f"{sizes(config.num_key_value_heads_per_layer, config.num_key_value_heads)} KV heads, "
            f"MLP {sizes(config.intermediate_sizes, config.intermediate_size)}, "
            f"{config_parameters(config) / 1e6:.1f}M parameters"
            + (" (sizes differ per layer)" if config.intermediate_sizes or config.num_attention_heads_per_layer
               or config.num_key_value_heads_per_layer else ""))


# ---- tokenizers ---------------------------------------------------------------------------------
def _tokenizer_for_export(checkpoint: Path, explicit: Optional[str]):
    """--tokenizer PATH, else the tokenizer folder beside the checkpoint, else None (warned)."""
    from llmshearing.assets import load_tokenizer

    if explicit:
        return load_tokenizer(Path(explicit))
    beside = tokenizer_beside(checkpoint)
    if beside is not None:
        _say(f"tokenizer: {beside}")
        return load_tokenizer(beside)
    _warn(f"no tokenizer given and neither {checkpoint_tokenizer_dir(checkpoint).name}/ nor {TOKENIZER_DIR}/ "
          f"beside {checkpoint}; exporting without one (pass --tokenizer PATH)")
    return None


# ---- commands -----------------------------------------------------------------------------------
def hf_to_composer(src: Path, dst: Path, dtype: str = "float32") -> Path:
    from llmshearing.assets import save_tokenizer
    from llmshearing.convert.composer_checkpoint import save_composer_checkpoint
    from llmshearing.convert.sources import detect_format, load_model

    _say(f"reading {detect_format(src)} model {src}")
    model = load_model(src, dtype=torch_dtype(dtype))
    _say(f"model: {_describe(model.config)}")
    tokenizer = load_source_tokenizer(src, lambda reason: f"no tokenizer taken from {src}: {reason}")
    _say(f"writing Composer checkpoint {dst}")
    save_composer_checkpoint(model, dst)
    if tokenizer is not None:
        save_tokenizer(tokenizer, checkpoint_tokenizer_dir(dst))
        _say(f"tokenizer saved to {checkpoint_tokenizer_dir(dst)}")
    return dst


def composer_to_hf(src: Path, dst: Path, prune: bool, tokenizer_path: Optional[str], dtype: str = "float32") -> Path:
    from llmshearing.convert.composer_checkpoint import load_composer_model
    from llmshearing.convert.export import export_hf
    from llmshearing.convert.weights import cast_parameters

    _say(f"reading Composer checkpoint {src}")
    model, l0_state = load_composer_model(src)
    _say(f"model: {_describe(model.config)}")
    tokenizer = _tokenizer_for_export(src, tokenizer_path)
    plan = None
    llama = model
    if prune:
        llama, plan = _prune(model, l0_state, src)
    elif l0_state is not None:
        _say("note: the checkpoint holds L0 masks; exporting the full model (--prune slices it to the masks' target)")
    cast_parameters(llama, torch_dtype(dtype))
    _say(f"writing Hugging Face model {dst}")
    return export_hf(llama, dst, tokenizer=tokenizer, plan=plan)


def _prune(model, l0_state: Optional[dict], src: Path):
    from llmshearing.checkpoint_plan import checkpoint_plan
    from llmshearing.slicing import slice_model

    if l0_state is None:
        raise CheckpointError(f"--prune needs L0 masks, but {src} has no L0 module state (l0.*); "
                              "drop --prune to export the full model")
    plan = checkpoint_plan(model.config, l0_state)
    if plan.warning():
        _warn(plan.warning())
    sliced = slice_model(model, plan)
    _say(f"pruned with the plan of the checkpoint's L0 masks to: {_describe(sliced.config)}")
    return sliced, plan


# ---- entry --------------------------------------------------------------------------------------
IMPORT_SUMMARY = "HF model dir or .gguf file -> Composer checkpoint (.pt)"
EXPORT_SUMMARY = "Composer checkpoint -> HF model dir (--prune: sliced with its L0 masks)"


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="Hugging Face model directory or .gguf file")
    parser.add_argument("dst", type=Path, help="Composer checkpoint file to write (.pt); "
                        "the tokenizer goes beside it, named after it (DST.pt -> DST.tokenizer/)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="weight dtype written")
    parser.set_defaults(work=lambda args: print(hf_to_composer(args.src, args.dst, args.dtype)))


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="Composer checkpoint (ours or one the Trainer wrote)")
    parser.add_argument("dst", type=Path, help="output Hugging Face model directory")
    parser.add_argument("--prune", action="store_true", help="slice the model with the checkpoint's L0 masks")
    parser.add_argument("--tokenizer", help=f"HF dir or .gguf to take the tokenizer from "
                        f"(default: SRC's own .tokenizer/ folder, else the run's {TOKENIZER_DIR}/ beside SRC)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="weight dtype written")
    parser.set_defaults(work=lambda args: print(composer_to_hf(args.src, args.dst, args.prune, args.tokenizer,
                                                               args.dtype)))


def build_parser(prog: str = DEFAULT_PROG) -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog, description="Convert between HF / GGUF models and Composer checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_import_arguments(commands.add_parser("hf-to-composer", help=IMPORT_SUMMARY, description=IMPORT_SUMMARY))
    add_export_arguments(commands.add_parser("composer-to-hf", help=EXPORT_SUMMARY, description=EXPORT_SUMMARY))
    return parser


def main(argv: Optional[Sequence[str]] = None, prog: str = DEFAULT_PROG) -> int:
    return run_cli(build_parser(prog), argv)


def import_main(argv: Optional[Sequence[str]] = None, prog: str = "llmshearing import") -> int:
    return run_cli(command_parser(prog, IMPORT_SUMMARY, add_import_arguments), argv)


def export_main(argv: Optional[Sequence[str]] = None, prog: str = "llmshearing export") -> int:
    return run_cli(command_parser(prog, EXPORT_SUMMARY, add_export_arguments), argv)
