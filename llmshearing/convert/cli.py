"""``python -m llmshearing.convert``: HF/GGUF → Composer checkpoint, Composer checkpoint → HF.

    python -m llmshearing.convert hf-to-composer SRC DST
    python -m llmshearing.convert composer-to-hf SRC DST [--prune] [--tokenizer PATH]

Progress goes to stdout and its last line is the output path; warnings go to stderr. Bad input
gives one ``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from llmshearing.assets import save_tokenizer
from llmshearing.convert.messages import first_line
from llmshearing.errors import CheckpointError, LLMShearingError

EXIT_BAD_INPUT = 2
TOKENIZER_DIR = "tokenizer"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
def _tokenizer_from_source(src: Path):
    """The tokenizer that comes with an HF dir or GGUF file, or None (with a warning)."""
    from llmshearing.assets import load_tokenizer

    try:
        return load_tokenizer(src)
    except Exception as exc:  # noqa: BLE001 - a model without a usable tokenizer still converts
        _warn(f"no tokenizer taken from {src}: {first_line(exc)}")
        return None


def _tokenizer_for_export(checkpoint: Path, explicit: Optional[str]):
    """--tokenizer PATH, else the ``tokenizer/`` folder beside the checkpoint, else None (warned)."""
    from llmshearing.assets import load_tokenizer

    if explicit:
        return load_tokenizer(Path(explicit))
    beside = checkpoint.parent / TOKENIZER_DIR
    if beside.is_dir():
        _say(f"tokenizer: {beside}")
        return load_tokenizer(beside)
    _warn(f"no tokenizer given and no {TOKENIZER_DIR}/ beside {checkpoint}; exporting without one "
          "(pass --tokenizer PATH)")
    return None


# ---- commands -----------------------------------------------------------------------------------
def hf_to_composer(src: Path, dst: Path, dtype: torch.dtype) -> Path:
    from llmshearing.convert.composer_checkpoint import save_composer_checkpoint
    from llmshearing.convert.sources import detect_format, load_model

    _say(f"reading {detect_format(src)} model {src}")
    model = load_model(src, dtype=dtype)
    _say(f"model: {_describe(model.config)}")
    tokenizer = _tokenizer_from_source(src)
    _say(f"writing Composer checkpoint {dst}")
    save_composer_checkpoint(model, dst)
    if tokenizer is not None:
        save_tokenizer(tokenizer, dst.parent / TOKENIZER_DIR)
        _say(f"tokenizer saved to {dst.parent / TOKENIZER_DIR}")
    return dst


def composer_to_hf(src: Path, dst: Path, prune: bool, tokenizer_path: Optional[str], dtype: torch.dtype) -> Path:
    from llmshearing.convert.composer_checkpoint import load_composer_model
    from llmshearing.convert.export import export_hf
    from llmshearing.convert.weights import cast_parameters

    _say(f"reading Composer checkpoint {src}")
    model, l0_state = load_composer_model(src)
    _say(f"model: {_describe(model.config)}")
    tokenizer = _tokenizer_for_export(src, tokenizer_path)
    plan = None
    llama = model.model
    if prune:
        llama, plan = _prune(model, l0_state, src)
    elif l0_state is not None:
        _say("note: the checkpoint holds L0 masks; exporting the full model (--prune slices it to the masks' target)")
    cast_parameters(llama, dtype)
    _say(f"writing Hugging Face model {dst}")
    return export_hf(llama, dst, tokenizer=tokenizer, plan=plan)


def _prune(model, l0_state: Optional[dict], src: Path):
    from llmshearing.convert.l0_state import rebuild_l0_module
    from llmshearing.sheared.convergence import plan_convergence_warning
    from llmshearing.slicing import slice_model

    if l0_state is None:
        raise CheckpointError(f"--prune needs L0 masks, but {src} has no L0 module state (l0.*); "
                              "drop --prune to export the full model")
    plan = rebuild_l0_module(model.config, l0_state).make_plan()
    lagging = plan_convergence_warning(plan)
    if lagging:
        _warn(lagging)
    sliced = slice_model(model.model, plan)
    _say(f"pruned with the L0 masks to: {_describe(sliced.config)}")
    return sliced, plan


# ---- entry --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmshearing.convert",
                                     description="Convert between HF / GGUF models and Composer checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)
    to_composer = commands.add_parser("hf-to-composer", help="HF model dir or .gguf file -> Composer checkpoint (.pt)")
    to_composer.add_argument("src", type=Path, help="Hugging Face model directory or .gguf file")
    to_composer.add_argument("dst", type=Path, help="Composer checkpoint file to write (.pt); "
                             f"the tokenizer goes to {TOKENIZER_DIR}/ beside it")
    to_hf = commands.add_parser("composer-to-hf", help="Composer checkpoint -> HF model dir")
    to_hf.add_argument("src", type=Path, help="Composer checkpoint (ours or one the Trainer wrote)")
    to_hf.add_argument("dst", type=Path, help="output Hugging Face model directory")
    to_hf.add_argument("--prune", action="store_true", help="slice the model with the checkpoint's L0 masks")
    to_hf.add_argument("--tokenizer", help=f"HF dir or .gguf to take the tokenizer from "
                       f"(default: {TOKENIZER_DIR}/ beside SRC)")
    for command in (to_composer, to_hf):
        command.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weight dtype written")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    dtype = DTYPES[args.dtype]
    try:
        if args.command == "hf-to-composer":
            out = hf_to_composer(args.src, args.dst, dtype)
        else:
            out = composer_to_hf(args.src, args.dst, args.prune, args.tokenizer, dtype)
    except (LLMShearingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(out)
    return 0
