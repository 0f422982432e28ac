"""Where a model's tokenizer lives on disk, for every kind of model path the commands accept.

An HF directory and a GGUF file carry their own; a Composer checkpoint carries none, so ``import`` writes
it beside the checkpoint, named after it (``model.pt`` -> ``model.tokenizer/``: two models converted into
one folder keep their own), and a training run writes one ``tokenizer/`` for all its checkpoints.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional

from llmshearing.assets import resolve_model_path
from llmshearing.convert.messages import first_line
from llmshearing.errors import LLMShearingError

TOKENIZER_DIR = "tokenizer"  # a training run's, in its save_folder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def checkpoint_tokenizer_dir(checkpoint: Path) -> Path:
    """Where ``import`` writes a converted checkpoint's tokenizer."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.tokenizer")


def tokenizer_beside(checkpoint: Path) -> Optional[Path]:
    """The checkpoint's own tokenizer folder, else its run's ``tokenizer/``, else None."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint_tokenizer_dir(checkpoint), checkpoint.parent / TOKENIZER_DIR):
        if folder.is_dir():
            return folder
    return None


def model_tokenizer_path(model_path) -> Optional[Path]:
    """The tokenizer of the model at ``model_path`` (HF dir, .gguf, Composer checkpoint or a shortcut), or None."""
    if model_path is None:
        return None
    path = Path(resolve_model_path(model_path))
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir():
        return path if any((path / name).is_file() for name in TOKENIZER_FILES) else None
    if path.is_file():
        return tokenizer_beside(path)
    return None


def load_source_tokenizer(model_path, warning: Callable[[str], str]):
    """The tokenizer that comes with the model at ``model_path`` (see :func:`model_tokenizer_path`), or
    None, after one line on stderr (``warning: `` + ``warning(reason)``), when it has none or it does not
    load: a model without a usable tokenizer still converts and prunes."""
    from llmshearing.assets import load_tokenizer

    source = model_tokenizer_path(model_path)
    try:
        if source is None:
            raise LLMShearingError(f"{model_path} has no tokenizer")
        return load_tokenizer(source)
    except LLMShearingError as exc:
        print(f"warning: {warning(first_line(exc))}", file=sys.stderr, flush=True)
        return None
