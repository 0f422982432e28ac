"""Warm start of the L0 masks from a one-shot importance (issue 16): learning starts near a good selection.

The hard-concrete gates normally start equal (log_alpha ≈ init_mean), so the first steps of the L0
stage choose among units at random under the Lagrangian's pressure. A warm start orders each gate
row by Minitron's activation importance (``importance.json`` of ``llmshearing prune minitron``):

    log_alpha = centre + spread · (q − (1 − keep))        (then clamped to the gates' range)

with q ∈ [0, 1] the unit's rank within its row (1 = most important) and keep the fraction of the row
the target keeps, so the units a one-shot cut would keep start above the centre and the ones it would
cut below; the deterministic masks at step 0 are then exactly the one-shot selection. The defaults
(centre −1.6, where a gate is open half the time; spread 160 in the warm start's log_alpha range
±9.2) put all but the units ranked near the cut at the clamp's bounds: the masked model starts as the one-shot slice and its expected sizes at
the target, and learning refines the selection near the cut. (The first measured warm start,
centre = the initial log_alpha 4.6 and spread 4, left every cut unit open, and the target ramp from
the whole source pulled them further open: docs/RESULTS.md, 2026-12-07.) Ranks, not the raw scores,
because the scores of different structures are not on one scale. Rows are what the plan selects within: per layer for neurons, per
layer for KV groups (the summed scores of the query heads the target keeps in each, as Minitron
selects them), per KV group for query heads, the whole model
for hidden channels and layers (Minitron's depth score). Units whose score is NaN (layers a
depth-first estimation did not score) keep their initial value.
"""
from __future__ import annotations

from typing import Dict

import torch

from llmshearing.errors import ConfigError
from llmshearing.minitron.importance import Importance
from llmshearing.minitron.selection import kv_group_scores
from llmshearing.sheared.hard_concrete import HALF_OPEN_LOG_ALPHA
from llmshearing.sheared.l0_module import L0Module

DEFAULT_SPREAD = 160.0  # sized for WARM_START_LOG_ALPHA_RANGE: ~30 % of the kept units ranked below its top
DEFAULT_CENTRE = HALF_OPEN_LOG_ALPHA
DEPTH_METRIC = "block_importance"


def gate_scores(importance: Importance, l0: L0Module) -> Dict[str, torch.Tensor]:
    """Importance scores in the shape of each of ``l0``'s sized gates (layer, kv_group, head, ...)."""
    source = l0.source
    heads = importance.heads.view(source.num_hidden_layers, source.num_key_value_heads, source.query_groups)
    scores = {
        "intermediate": importance.neurons,
        "hidden": importance.hidden,
        "kv_group": kv_group_scores(importance.heads, source.query_groups, l0.target.query_groups),
        "head": heads,  # ranked within each KV group
    }
    if "layer" in l0.structures:
        scores["layer"] = importance.depth_scores(DEPTH_METRIC)
    return {name: scores[name] for name in l0.structures}


def rank_offsets(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """q − (1 − keep) along the last dimension, q the rank (0 least, 1 most important); 0 where NaN.
    Ties are ranked lower index higher, as the masks' own top-k keeps them."""
    n = scores.shape[-1]
    # descending stable sort: the lower index of tied scores comes first, i.e. ranks higher
    order = scores.nan_to_num(float("-inf")).sort(dim=-1, descending=True, stable=True).indices
    position = torch.empty_like(order).scatter_(-1, order, torch.arange(n).expand_as(order))
    q = 1.0 - position.float() / max(n - 1, 1)
    return (q - (1.0 - keep)).masked_fill(scores.isnan(), 0.0)


@torch.no_grad()
def warm_start(l0: L0Module, importance: Importance, spread: float = DEFAULT_SPREAD,
               centre: float = DEFAULT_CENTRE) -> None:
    """Set every sized gate's log_alpha to ``centre`` + ``spread`` × its rank offset (the module docstring)."""
    importance.check_source(l0.source)
    for name, scores in gate_scores(importance, l0).items():
        log_alpha = l0.gates[name].log_alpha
        offsets = rank_offsets(scores.float(), _keep_fraction(l0, name)).reshape(log_alpha.shape)
        scored = ~scores.isnan().reshape(log_alpha.shape).to(log_alpha.device)
        log_alpha.copy_(torch.where(scored, centre + spread * offsets.to(log_alpha.device), log_alpha))
    l0.clamp_()


def _keep_fraction(l0: L0Module, name: str) -> float:
    """The fraction of its row the target keeps: of a KV group's query heads for ``head``."""
    if name == "head":
        return l0.target.query_groups / l0.source.query_groups
    return l0.final_fraction(name)


def load_importance(path: str) -> Importance:
    """The importance file of ``pruning.warm_start``, or one line saying how to make it."""
    try:
        return Importance.load(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"pruning.warm_start: {exc}; write one with `llmshearing prune minitron --model SOURCE "
                          f"--data CORPUS --out DIR --target ...` (DIR/importance.json)") from exc
