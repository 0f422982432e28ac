"""Write our model as a Hugging Face model directory that ``transformers`` loads as the family's own class.

Uniform models are plain directories of their family (LLaMA, Mistral, Qwen2, Qwen3). Models with per-layer sizes get the per-layer lists in
config.json and a self-contained modeling file (``trust_remote_code=True`` to load them).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from llmshearing.assets import save_tokenizer
from llmshearing.errors import LLMShearingError
from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.plan import PruningPlan

# per-layer sizes: a small modeling file beside the weights, named in config.json's auto_map
PER_LAYER_MODELING = Path(__file__).with_name("modeling_llmshearing_llama.py")
WEIGHTS_FILE = "model.safetensors"
LM_HEAD = "lm_head.weight"
DIR_MODE = 0o755
FILE_MODE = 0o644


def hf_state_dict(model: LlamaForCausalLM) -> dict:
    """Contiguous CPU tensors under HF names; ``lm_head`` left out when tied (safetensors refuses
    shared tensors, and ``transformers`` re-ties it from ``tie_word_embeddings``)."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop(LM_HEAD, None)
    return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}


def _write_model(model: LlamaForCausalLM, folder: Path) -> None:
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    hf_config = model.config.to_hf()
    hf_config.dtype = model.lm_head.weight.dtype
    if not model.config.is_uniform:
        _add_per_layer_modeling(hf_config, folder)
    hf_config.save_pretrained(folder)
    GenerationConfig.from_model_config(hf_config).save_pretrained(folder)
    save_file(hf_state_dict(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    (folder / WEIGHTS_FILE).chmod(FILE_MODE)  # safetensors writes it private


def _add_per_layer_modeling(hf_config, folder: Path) -> None:
    """Layers of different sizes load with ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``."""
    target = folder / PER_LAYER_MODELING.name
    shutil.copyfile(PER_LAYER_MODELING, target)
    target.chmod(FILE_MODE)
    per_layer_class = f"{hf_config.architectures[0].removesuffix('ForCausalLM')}ForCausalLMWithLayerSizes"
    hf_config.auto_map = {"AutoModelForCausalLM": f"{PER_LAYER_MODELING.stem}.{per_layer_class}"}
    hf_config.architectures = [per_layer_class]


def _check_replaceable(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or
                             (any(out_dir.iterdir()) and not (out_dir / "config.json").is_file())):
        raise LLMShearingError(f"{out_dir} exists and is not a model directory; choose another output path")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an earlier export there is replaced only once the new one is complete."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.old-", dir=out_dir.parent))
    out_dir.rename(old / out_dir.name)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


@torch.no_grad()
def export_hf(model: LlamaForCausalLM, out_dir, tokenizer=None, plan: Optional[PruningPlan] = None) -> Path:
    """Write config.json, generation_config.json, model.safetensors (+ tokenizer, + pruning plan;
    + ``modeling_llmshearing_llama.py`` when the layers have different sizes).

    The directory appears complete or not at all: everything is written to a sibling
    ``<out_dir>.tmp-XXXX`` folder that is then renamed. An earlier export at ``out_dir`` is replaced.
    """
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(DIR_MODE)  # mkdtemp makes it private
    try:
        _write_model(model, tmp)
        if tokenizer is not None:
            save_tokenizer(tokenizer, tmp)
        if plan is not None:
            plan.save(tmp)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
