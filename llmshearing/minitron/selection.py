"""Importance scores + target shape -> PruningPlan (top-k by score, no scales, no weight update).

GQA: per layer the K' KV groups with the largest summed scores of the query heads they would keep
are kept, and inside each kept group its g' best query heads, so the result is a valid config.
Layers: the k best by the chosen depth metric, or the contiguous block whose removal loses the
least importance.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from llmshearing.errors import ShapeError
from llmshearing.minitron.importance import Importance
from llmshearing.plan import LayerPlan, PruningPlan
from llmshearing.shape import TargetShape



def top_indices(scores: torch.Tensor, k: int) -> List[int]:
    """The ``k`` highest-scoring indices in increasing order (ties: lower index first; NaN last)."""
    scores = torch.nan_to_num(scores.float(), nan=float("-inf"))
    order = torch.sort(scores, descending=True, stable=True).indices
    return sorted(order[:k].tolist())


def select_layers(scores: torch.Tensor, keep: int, selection: str = "top") -> List[int]:
    if selection == "top":
        return top_indices(scores, keep)
    drop = len(scores) - keep
    if drop == 0:
        return list(range(len(scores)))
    scores = torch.nan_to_num(scores.float(), nan=float("inf"))
    losses = [float(scores[start:start + drop].sum()) for start in range(len(scores) - drop + 1)]
    start = min(range(len(losses)), key=losses.__getitem__)
    return [i for i in range(len(scores)) if not start <= i < start + drop]


def kv_group_scores(head_scores: torch.Tensor, source_groups: int, per_group: int) -> torch.Tensor:
    """[..., n_heads] -> [..., n_kv]: a KV group's score is the summed scores of the ``per_group`` best
    query heads it would keep."""
    groups = head_scores.float().unflatten(-1, (-1, source_groups))
    return torch.sort(groups, dim=-1, descending=True).values[..., :per_group].sum(dim=-1)


def select_heads(head_scores: torch.Tensor, source_groups: int, kv_heads: int,
                 per_group: int) -> Tuple[List[int], List[int]]:
    """(kept KV heads, kept query heads ordered by kept group) for one layer."""
    groups = head_scores.float().view(-1, source_groups)
    kept_groups = top_indices(kv_group_scores(head_scores, source_groups, per_group), kv_heads)
    heads = [g * source_groups + h for g in kept_groups for h in top_indices(groups[g], per_group)]
    return kept_groups, heads


def check_first_stage(importance: Importance, target: TargetShape) -> None:
    """A depth-first / width-first estimate is valid only for targets with the same first stage."""
    stage = importance.metadata.get("first_stage")
    if not stage:
        return
    fixed = {k: getattr(target, k) for k in stage["shape"]}
    if fixed != stage["shape"]:
        raise ShapeError(
            f"the importance scores were estimated {importance.metadata['order']} for {stage['shape']}; "
            f"this target needs {fixed}: recompute them (leave out --importance) or use --order joint"
        )


def build_plan(
    importance: Importance, target: TargetShape, *, depth_metric: str = "block_importance", depth_selection: str = "top"
) -> PruningPlan:
    source = importance.source
    target.validate_against(source)
    check_first_stage(importance, target)
    if target.num_hidden_layers < source.num_hidden_layers:
        layers = select_layers(importance.depth_scores(depth_metric), target.num_hidden_layers, depth_selection)
    else:
        layers = list(range(source.num_hidden_layers))
    plan = PruningPlan(
        source.to_dict(), top_indices(importance.hidden, target.hidden_size), [], method="minitron",
        metadata={"depth_metric": depth_metric, "depth_selection": depth_selection,
                  "order": importance.metadata.get("order", "joint")},
    )
    for i in layers:
        if torch.isnan(importance.heads[i]).any() or torch.isnan(importance.neurons[i]).any():
            raise ShapeError(f"layer {i} has no width importance scores (it was not scored)")
        kv_heads, heads = select_heads(importance.heads[i], source.query_groups,
                                       target.num_key_value_heads, target.query_groups)
        neurons = top_indices(importance.neurons[i], target.intermediate_size)
        plan.layers.append(LayerPlan(source_index=i, kept_kv_heads=kv_heads, kept_heads=heads, kept_neurons=neurons))
    plan.validate()
    return plan
