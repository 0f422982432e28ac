"""Layer importance as the increase of the calibration LM loss when that one layer is removed.

A layer is removed by zeroing its ``layer_z`` mask (both residual branches), which is exactly what
the model computes without it. Costs one forward pass per layer and batch.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from llmshearing.eval.perplexity import sequence_nll
from llmshearing.model.llama import LlamaForCausalLM


@torch.no_grad()
def mean_lm_loss(model: LlamaForCausalLM, batches: Sequence[torch.Tensor], masks: Optional[dict] = None) -> float:
    """Token-weighted mean next-token loss over ``batches``."""
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for ids in batches:
        ids = ids.to(device)
        total += float(sequence_nll(model, ids, masks).sum())
        tokens += ids.shape[0] * (ids.shape[1] - 1)
    return total / tokens


@torch.no_grad()
def layer_removal_loss_increase(
    model: LlamaForCausalLM, batches: Sequence[torch.Tensor], masks: Optional[dict] = None
) -> torch.Tensor:
    """[L]: loss without layer i minus loss with it; NaN for layers ``masks`` already removes."""
    layers = model.config.num_hidden_layers
    device = next(model.parameters()).device
    base_masks = {k: v.to(device) for k, v in (masks or {}).items()}
    present = base_masks.get("layer_z", torch.ones(layers, device=device)).clone()
    was_training = model.training
    model.eval()
    baseline = mean_lm_loss(model, batches, base_masks or None)
    scores = torch.full((layers,), float("nan"))
    for i in range(layers):
        if present[i] == 0:
            continue
        layer_z = present.clone()
        layer_z[i] = 0.0
        scores[i] = mean_lm_loss(model, batches, {**base_masks, "layer_z": layer_z}) - baseline
    model.train(was_training)
    return scores
