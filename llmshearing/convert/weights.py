"""Copy named tensors into our LlamaForCausalLM, checking names and shapes; cast parameters."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from llmshearing.errors import CheckpointError
from llmshearing.model.llama import LlamaForCausalLM

LM_HEAD = "lm_head.weight"
# tensors some checkpoints carry that our model recomputes (old HF LLaMA saved the RoPE table)
RECOMPUTED_SUFFIXES = ("rotary_emb.inv_freq",)
SHOWN_NAMES = 5


def _listing(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


@torch.no_grad()
def copy_weights(model: LlamaForCausalLM, chunks: Iterable[Mapping[str, torch.Tensor]], source) -> None:
    """Copy every tensor of ``chunks`` (HF parameter names) into ``model``.

    ``chunks`` may be one state dict or one per weight shard, so a large model is read one shard at
    a time. With tied embeddings ``lm_head.weight`` comes from ``model.embed_tokens.weight`` and a
    saved copy of it is ignored, as in ``transformers``. Raises CheckpointError naming ``source``
    when a tensor is missing, unexpected or of another shape than the model config asks for.
    """
    targets = model.state_dict(keep_vars=True)
    tied = model.config.tie_word_embeddings
    expected = set(targets) - ({LM_HEAD} if tied else set())
    seen, unexpected = set(), set()
    for chunk in chunks:
        for name, tensor in chunk.items():
            if name not in expected:
                if not (tied and name == LM_HEAD) and not name.endswith(RECOMPUTED_SUFFIXES):
                    unexpected.add(name)
                continue
            target = targets[name]
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"{source}: {name} has shape {tuple(tensor.shape)} but the model config needs "
                    f"{tuple(target.shape)} (checkpoint of another shape?)"
                )
            target.copy_(tensor)
            seen.add(name)
    if expected - seen:
        raise CheckpointError(f"{source}: missing weights {_listing(expected - seen)}")
    if unexpected:
        raise CheckpointError(f"{source}: weights our LLaMA model has no place for: {_listing(unexpected)}")


def cast_parameters(module: nn.Module, dtype: torch.dtype) -> None:
    """Cast parameters only (buffers keep their dtype; the RoPE frequencies are no buffer and
    stay fp32 anyway). Tied parameters are one Parameter object, so they stay tied.
    """
    for parameter in module.parameters():
        parameter.data = parameter.data.to(dtype)


def model_from_weights(config, chunks: Iterable[Mapping[str, torch.Tensor]], dtype: torch.dtype, source):
    """A LlamaForCausalLM of ``config`` holding the tensors of ``chunks`` as ``dtype`` parameters."""
    from llmshearing.model.llama import LlamaForCausalLM

    model = LlamaForCausalLM.empty(config)
    cast_parameters(model, dtype)
    copy_weights(model, chunks, source)
    return model
