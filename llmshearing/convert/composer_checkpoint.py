"""Composer checkpoints: write one the Trainer can start from, read ours or the Trainer's own.

Layout (what ``composer.utils.checkpoint`` writes and reads for a monolithic checkpoint)::

    {"state": {"model": <ComposerModel state dict>, "integrations": {...}, "metadata": {...},
               ...optimizers, schedulers, timestamp, ... when the Trainer wrote it},
     "rng": [...]}                                     # Trainer checkpoints only

``Trainer(load_path=..., load_weights_only=True)`` needs only ``state.model``. The model state dict
of a ComposerLlama has ``model.*`` (the LLaMA, HF names after the prefix), ``l0.*`` (the L0
module, when attached) and ``_extra_state`` = {"model_config": {...}}.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from llmshearing.checkpoint_files import verify_checkpoint_file, write_atomically
from llmshearing.convert.messages import first_line
from llmshearing.convert.weights import model_from_weights
from llmshearing.errors import CheckpointError, ConfigError
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.model.config import LlamaConfig

EXTRA_STATE = "_extra_state"
MODEL_PREFIX = "model."
L0_PREFIX = "l0."
# wrapper path components that DDP / FSDP / activation checkpointing / torch.compile put in keys
WRAPPER_COMPONENTS = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")
DDP_PREFIX = "module."


# ---- writing ------------------------------------------------------------------------------------
def save_composer_checkpoint(model: LlamaForCausalLM, path) -> Path:
    """Write ``model`` as a weights-only Composer checkpoint at ``path`` (atomically), with the state dict
    the training run's ComposerLlama has, so that training and export load it like their own."""
    import composer

    path = Path(path)
    if not isinstance(model, ComposerLlama):
        model = ComposerLlama.wrapping(model)
    state_dict = {key: value.detach().cpu() if torch.is_tensor(value) else value
                  for key, value in model.state_dict().items()}
    checkpoint = {
        "state": {
            "model": state_dict,
            "integrations": {},
            "metadata": {
                "torch_version": torch.__version__,
                "composer_version": composer.__version__,
                "written_by": "llmshearing.convert",
            },
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda partial: torch.save(checkpoint, partial))
    return path


# ---- reading ------------------------------------------------------------------------------------
def read_composer_checkpoint(path) -> Dict[str, object]:
    """The ComposerLlama state dict (``model.*``, ``l0.*``, ``_extra_state``) stored at ``path``.

    Accepts our weights-only file, a Trainer checkpoint (``ep0-ba10-rank0.pt``, the
    ``latest-rank0.pt`` symlink) or a bare state dict; wrapper prefixes are removed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give a checkpoint file such as "
                              "latest-rank0.pt (sharded FSDP checkpoints are not supported)")
    verify_checkpoint_file(path)  # torch.load would read flipped bits without complaint
    return _clean_keys(_model_state(_torch_load(path), path))


def _torch_load(path: Path):
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower():
                raise
            # a Trainer checkpoint pickles Composer objects (as composer's own loader does, trust it)
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a damaged file
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): "
                              f"{first_line(exc)}") from exc


def _model_state(checkpoint, path: Path) -> dict:
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state"), dict):
        model_state = checkpoint["state"].get("model")
        if not isinstance(model_state, dict):
            raise CheckpointError(f"{path} is a Composer checkpoint without model weights (state.model)")
        return model_state
    if isinstance(checkpoint, dict) and any(torch.is_tensor(value) for value in checkpoint.values()):
        return checkpoint  # a bare state dict
    raise CheckpointError(f"{path} is not a Composer checkpoint (no state.model entry)")


def _clean_key(key: str) -> str:
    return ".".join(part for part in key.split(".") if part not in WRAPPER_COMPONENTS)


def _clean_keys(state: dict) -> dict:
    if state and all(key.startswith(DDP_PREFIX) for key in state):
        state = {key[len(DDP_PREFIX):]: value for key, value in state.items()}
    return {_clean_key(key): value for key, value in state.items()}


# ---- building the model -------------------------------------------------------------------------
def model_config_of(state: dict, path) -> LlamaConfig:
    extra = state.get(EXTRA_STATE)
    if not isinstance(extra, dict) or "model_config" not in extra:
        raise CheckpointError(f"{path} has no model config (_extra_state.model_config): "
                              "not a checkpoint of llmshearing's ComposerLlama")
    try:
        return LlamaConfig.from_dict(extra["model_config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config in checkpoint: {exc}") from exc


def split_state(state: dict) -> Tuple[dict, Optional[dict]]:
    """(LLaMA weights with HF names, L0 module state or None)."""
    weights = {key[len(MODEL_PREFIX):]: value for key, value in state.items() if key.startswith(MODEL_PREFIX)}
    l0_state = {key[len(L0_PREFIX):]: value for key, value in state.items() if key.startswith(L0_PREFIX)}
    return weights, (l0_state or None)


def load_composer_model(path, dtype: torch.dtype = torch.float32) -> Tuple[LlamaForCausalLM, Optional[dict]]:
    """(the LLaMA model stored at ``path``, its L0 module state with ``l0.`` removed, or None).

    The model config comes from the checkpoint; tensors that do not fit it raise CheckpointError.
    """
    state = read_composer_checkpoint(path)
    config = model_config_of(state, path)
    weights, l0_state = split_state(state)
    return model_from_weights(config, [weights], dtype, path), l0_state
