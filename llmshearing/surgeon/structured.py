"""Structured pruning decisions: which attention units and MLP neurons each layer loses.

Every unit of every layer is ranked by cost per weight against one global threshold that removes
(1 - density) of the prunable weights; this learns how much attention vs MLP, and how much of each
layer, to cut. The kept counts then become whole numbers:
- uniform (``--uniform``, a plain LLaMA config): the mean kept count per kind over layers is used in
  every layer (query heads: the same number in every KV group), and the neuron count is set so the
  layer meets the density;
- per layer (default): each layer keeps its own attention count (rounded to the same number of
  query heads in every KV group), then the globally cheapest neurons go until the density is met;
  every layer keeps at least one query head per KV group (one KV group) and one neuron.
- exact target (``--target``): the counts step linearly from the source's to the target's over the
  shots (the global ranking is not needed).
Each layer then removes its cheapest units of each kind. Units removed in an earlier shot stay
removed (counts never grow back).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

import torch

from llmshearing.model.config import LlamaConfig
from llmshearing.plan import PruningPlan
from llmshearing.surgeon.curvature import IdentityCurvature
from llmshearing.surgeon.target import TargetCounts
from llmshearing.surgeon.units import UnitKind, attention_kind, neuron_kind, projection_sizes


def _cheapest(costs: torch.Tensor, kind: UnitKind, keep_per_group: int, removed: List[int]) -> List[int]:
    """Units to remove so that every group keeps ``keep_per_group``; earlier removals go first."""
    ranked = costs.clone()
    ranked[removed] = -float("inf")
    order = ranked.view(-1, kind.group_size).argsort(dim=1, stable=True)
    drop = order[:, :kind.group_size - keep_per_group]
    starts = torch.arange(0, kind.count, kind.group_size)[:, None]
    return sorted((drop + starts).reshape(-1).tolist())


class StructuredPruning:
    def __init__(self, config: LlamaConfig, attention_unit: str, uniform: bool = True,
                 target: Optional[TargetCounts] = None):
        self.config, self.uniform, self.target = config, uniform or target is not None, target
        self.attention = attention_kind(config, attention_unit)
        self.neurons = neuron_kind(config)
        self.kinds = (self.attention, self.neurons)
        self.removed: Dict[str, Dict[int, List[int]]] = {k.name: {i: [] for i in range(config.num_hidden_layers)}
                                                         for k in self.kinds}

    selects_globally = True  # costs of every layer, then one selection

    @property
    def layer_params(self) -> int:
        """All projection weights of a layer (k/v count too when only query heads are pruned)."""
        return sum(projection_sizes(self.config).values())

    # ---- one shot --------------------------------------------------------------------------
    def layer_costs(self, layer, curvatures) -> Dict[str, torch.Tensor]:
        return {kind.name: kind.costs(layer, curvatures) for kind in self.kinds}

    def select(self, costs: Dict[int, Dict[str, torch.Tensor]], density: float) -> None:
        if self.target is not None:
            counts_per_layer = self._target_counts(costs, density)
        else:
            choose = self._uniform_counts if self.uniform else self._per_layer_counts
            counts_per_layer = choose(costs, self._globally_kept(costs, density), density)
        for index, counts in counts_per_layer.items():
            for kind in self.kinds:
                self.removed[kind.name][index] = _cheapest(costs[index][kind.name], kind, counts[kind.name],
                                                           self.removed[kind.name][index])

    def _uniform_counts(self, costs, kept: Dict[str, torch.Tensor], density: float) -> Dict[int, Dict[str, int]]:
        """The same kept count in every layer: attention from the mean, neurons to meet the density."""
        attention, neurons = self.attention, self.neurons
        per_group = self._per_group(float(kept[attention.name].mean()), min(self._room(attention, i) for i in costs))
        fixed = self.layer_params - sum(kind.count * kind.params for kind in self.kinds)
        attention_params = per_group * self._groups * attention.params
        kept_neurons = round((density * self.layer_params - fixed - attention_params) / neurons.params)
        kept_neurons = max(1, min(kept_neurons, min(self._room(neurons, i) for i in costs)))
        return {index: {attention.name: per_group, neurons.name: kept_neurons} for index in costs}

    def _target_counts(self, costs, density: float) -> Dict[int, Dict[str, int]]:
        """Counts this far along the way from the source's to the target's, the same in every layer."""
        final = self.target.density
        progress = 1.0 if final >= 1.0 else min(1.0, (1.0 - density) / (1.0 - final))
        final_counts = {self.attention.name: self.target.attention_per_group, self.neurons.name: self.target.neurons}
        counts = {}
        for kind in self.kinds:
            start = kind.group_size
            wanted = round(start - progress * (start - final_counts[kind.name]))
            counts[kind.name] = max(1, min(wanted, min(self._room(kind, index) for index in costs)))
        return {index: dict(counts) for index in costs}

    def _per_layer_counts(self, costs, kept: Dict[str, torch.Tensor], density: float) -> Dict[int, Dict[str, int]]:
        """Each layer's own attention count; then the globally cheapest neurons until the density is met."""
        attention, neurons = self.attention, self.neurons
        layers = list(costs)
        per_group = {index: self._per_group(float(kept[attention.name][n]), self._room(attention, index))
                     for n, index in enumerate(layers)}
        attention_removed = sum(attention.count - keep * self._groups for keep in per_group.values()) * attention.params
        target = (1.0 - density) * self.layer_params * len(layers)
        already = sum(len(self.removed[neurons.name][index]) for index in layers)
        n_removed = max(round((target - attention_removed) / neurons.params), already)
        ranked = []
        for index in layers:
            cost = costs[index][neurons.name].clone()
            cost[self.removed[neurons.name][index]] = -float("inf")
            cost[cost.argmax()] = float("inf")  # every layer keeps at least its most costly neuron
            ranked.append(cost)
        chosen = torch.cat(ranked).argsort(stable=True)[:min(n_removed, (neurons.count - 1) * len(layers))]
        removed_per_layer = torch.bincount(chosen // neurons.count, minlength=len(layers))
        return {index: {attention.name: per_group[index], neurons.name: neurons.count - int(removed_per_layer[n])}
                for n, index in enumerate(layers)}

    @property
    def _groups(self) -> int:
        return self.attention.count // self.attention.group_size

    def _per_group(self, kept_units: float, room: int) -> int:
        """Whole units per group from a kept count: at least one, never more than still there."""
        return max(1, min(round(kept_units / self._groups), room))

    def _room(self, kind: UnitKind, index: int) -> int:
        """Units per group that layer ``index`` still has (removed units never come back)."""
        return kind.group_size - len(self.removed[kind.name][index]) // (kind.count // kind.group_size)

    def _globally_kept(self, costs, density: float) -> Dict[str, torch.Tensor]:
        """Kept units of each kind in each layer (in the order of ``costs``) under one global
        cost-per-weight threshold."""
        keys, params, kinds, layers = [], [], [], []
        for n, (index, layer_costs) in enumerate(costs.items()):
            for kind_index, kind in enumerate(self.kinds):
                per_weight = layer_costs[kind.name] / kind.params
                per_weight[self.removed[kind.name][index]] = -float("inf")
                keys.append(per_weight)
                params.append(torch.full((kind.count,), kind.params, dtype=torch.float64))
                kinds.append(torch.full((kind.count,), kind_index))
                layers.append(torch.full((kind.count,), n))
        order = torch.cat(keys).argsort(stable=True)
        removed_params = torch.cat(params)[order].cumsum(0)
        target = (1.0 - density) * self.layer_params * len(costs)
        n_removed = int((removed_params < target).sum()) + (1 if target > 0 else 0)
        removed_kinds, removed_layers = torch.cat(kinds)[order[:n_removed]], torch.cat(layers)[order[:n_removed]]
        return {kind.name: kind.count - torch.bincount(removed_layers[removed_kinds == i], minlength=len(costs)).float()
                for i, kind in enumerate(self.kinds)}

    @torch.no_grad()
    def apply(self, index: int, layer, curvatures) -> None:
        for kind in self.kinds:
            kind.remove(layer, curvatures, self.removed[kind.name][index])

    def zero(self, model) -> None:
        """Set every removed unit to zero again (after fine-tuning moved it)."""
        for index, layer in enumerate(model.model.layers):
            for kind in self.kinds:
                kind.remove(layer, defaultdict(IdentityCurvature), self.removed[kind.name][index])

    # ---- results ---------------------------------------------------------------------------
    def projection_density(self, index: int) -> Dict[str, float]:
        density = {name: 1.0 for name in projection_sizes(self.config)}
        for kind in self.kinds:
            kept = 1.0 - len(self.removed[kind.name][index]) / kind.count
            for piece in kind.pieces:
                density[piece.projection] = kept
        return density

    def updated_projections(self) -> List[str]:
        return [piece.projection for kind in self.kinds for piece in kind.pieces if piece.updated]

    def plan(self, model) -> PruningPlan:
        """Kept units per layer + the weights changed by correlated updates (down_proj, o_proj)."""
        config = self.config
        plan = PruningPlan.identity(config, method="llm-surgeon")
        groups = config.query_groups
        for index, layer_plan in enumerate(plan.layers):
            removed_attention = set(self.removed[self.attention.name][index])
            if self.attention.name == "head":
                layer_plan.kept_heads = [h for h in range(config.num_attention_heads) if h not in removed_attention]
            else:
                layer_plan.kept_kv_heads = [g for g in range(config.num_key_value_heads) if g not in removed_attention]
                layer_plan.kept_heads = [h for g in layer_plan.kept_kv_heads for h in range(g * groups, (g + 1) * groups)]
            removed_neurons = set(self.removed[self.neurons.name][index])
            layer_plan.kept_neurons = [j for j in range(config.intermediate_size) if j not in removed_neurons]
        plan.replacement_weights = {
            f"model.layers.{index}.{name}.weight": layer.get_submodule(name).weight.data
            for index, layer in enumerate(model.model.layers) for name in self.updated_projections()
        }
        return plan
