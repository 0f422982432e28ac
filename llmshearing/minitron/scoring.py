"""Estimate every importance score of a source model on calibration batches, in one of three orders:

- ``joint`` (default): width and depth scores from one look at the full model (single shot);
- ``depth-first``: depth scores on the full model, choose the layers, then width scores with the
  dropped layers removed (the ``layer_z`` mask);
- ``width-first``: width scores on the full model, choose the width, then depth scores on the
  width-pruned model (the plan's masks).
The second pass runs on the masked source model, so every score keeps source indices.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import torch

from llmshearing.errors import ConfigError
from llmshearing.minitron.activations import record_activations
from llmshearing.minitron.aggregation import check_aggregation
from llmshearing.minitron.depth import layer_removal_loss_increase
from llmshearing.minitron.choices import DEPTH_METRICS, ORDERS
from llmshearing.minitron.importance import Importance
from llmshearing.minitron.selection import build_plan, select_layers
from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.plan import PruningPlan
from llmshearing.shape import TargetShape

log = logging.getLogger(__name__)
WIDTH_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size")


def estimate_importance(
    model: LlamaForCausalLM,
    batches: Sequence[torch.Tensor],
    *,
    order: str = "joint",
    target: Optional[TargetShape] = None,
    depth_metric: str = "block_importance",
    depth_selection: str = "top",
    sequence: str = "mean",
    batch: str = "l2",
) -> Importance:
    model.config.require_uniform("Minitron importance scoring")
    check_aggregation(sequence, "sequence")
    check_aggregation(batch, "batch")
    if depth_metric not in DEPTH_METRICS:
        raise ConfigError(f"unknown depth metric '{depth_metric}'; choose from {list(DEPTH_METRICS)}")
    if order not in ORDERS:
        raise ConfigError(f"unknown order '{order}'; choose from {list(ORDERS)}")
    if order != "joint" and target is None:
        raise ConfigError(f"--order {order} needs a target shape")
    metadata = {"order": order, "aggregation": {"sequence": sequence, "batch": batch},
                "calibration": {"samples": sum(len(b) for b in batches), "seq_len": int(batches[0].shape[1])}}

    def score(masks=None, layers=None, loss_depth=True) -> Importance:
        log.info("scoring %s: activations of %d calibration batches", "the masked model" if masks else "the model",
                 len(batches))
        acts = record_activations(model, batches, sequence=sequence, batch=batch, layers=layers, masks=masks)
        depth = {"block_importance": acts.block_importance}
        if depth_metric == "lm_loss" and loss_depth:  # one forward per layer: only where it is used
            log.info("scoring depth by lm_loss: %d batches per layer removed, %d layers",
                     len(batches), model.config.num_hidden_layers)
            depth["lm_loss"] = layer_removal_loss_increase(model, batches, masks)
        return Importance(model.config.to_dict(), acts.hidden, acts.heads, acts.neurons, depth, dict(metadata))

    full = score(loss_depth=order != "width-first")
    if order == "joint":
        return full
    if order == "depth-first":
        layers = select_layers(full.depth_scores(depth_metric), target.num_hidden_layers, depth_selection)
        stage = PruningPlan.identity(model.config)
        stage.layers = [stage.layers[i] for i in layers]
        width = score(masks=stage.to_masks(), layers=layers, loss_depth=False)
        result = dataclasses.replace(full, hidden=width.hidden, heads=width.heads, neurons=width.neurons)
        shape = {"num_hidden_layers": target.num_hidden_layers}
    else:
        shape = {k: getattr(target, k) for k in WIDTH_KEYS}
        stage = build_plan(full, TargetShape(**{**TargetShape.of(model.config).to_dict(), **shape}))
        result = dataclasses.replace(full, depth=score(masks=stage.to_masks()).depth)
    result.metadata["first_stage"] = {"axis": order.split("-")[0], "shape": shape}
    return result
