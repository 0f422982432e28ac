"""2:4 weights as PyTorch semi-structured sparse tensors (GPU sparse tensor cores).

The surgeon exports 2:4 models dense with zeros, which any loader reads; after loading on a GPU,
``to_semi_structured(model)`` swaps each decoder projection for its compressed 2:4 form so matrix
products use the sparse kernels. Needs CUDA, fp16/bf16 weights, and sizes the kernels accept.
"""
from __future__ import annotations

import torch

from llmshearing.errors import ConfigError, ShapeError
from llmshearing.surgeon.kfac import PROJECTIONS


def two_zeros_in_every_four(weight: torch.Tensor) -> bool:
    """True if every group of four consecutive inputs of every row holds at least two zeros."""
    if weight.shape[-1] % 4:
        return False
    zeros = (weight.reshape(-1, 4) == 0).sum(dim=1)
    return bool((zeros >= 2).all())


@torch.no_grad()
def to_semi_structured(model) -> int:
    """Replace every 2:4 decoder projection weight of ``model`` (an LLaMA with HF names, e.g. ours or
    ``transformers``') by a semi-structured sparse tensor, in place; returns how many were replaced."""
    from torch.sparse import to_sparse_semi_structured

    layers = model.model.layers
    weight = layers[0].get_submodule(PROJECTIONS[0]).weight
    if weight.device.type != "cuda":
        raise ConfigError("semi-structured sparse tensors need the model on a CUDA GPU")
    if weight.dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError(f"semi-structured sparse tensors need fp16 or bf16 weights, not {weight.dtype}")
    replaced = 0
    for index, layer in enumerate(layers):
        for name in PROJECTIONS:
            linear = layer.get_submodule(name)
            if not two_zeros_in_every_four(linear.weight):
                raise ShapeError(f"layer {index} {name} is not 2:4 sparse")
            try:
                sparse = to_sparse_semi_structured(linear.weight.detach())
            except (RuntimeError, ValueError) as exc:
                raise ShapeError(f"layer {index} {name} of shape {tuple(linear.weight.shape)}: {exc}") from exc
            linear.weight = torch.nn.Parameter(sparse, requires_grad=False)
            replaced += 1
    return replaced
