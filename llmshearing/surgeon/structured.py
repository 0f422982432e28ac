"""Structured pruning decisions: which attention units and MLP neurons each layer loses.

Selection (uniform sizes, so the result is a plain LLaMA config):
1. every unit of every layer is ranked by cost per weight against one global threshold that
   removes (1 - density) of the prunable weights; this learns how much attention vs MLP to cut;
2. the mean kept count per kind over layers becomes the uniform count (query heads: the same number
   in every KV group), and the neuron count is set so the layer meets the density;
3. each layer then removes its cheapest units of each kind.
Units removed in an earlier shot stay removed (counts never grow back).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List

import torch

from llmshearing.model.config import LlamaConfig
from llmshearing.plan import PruningPlan
from llmshearing.surgeon.curvature import IdentityCurvature
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
    def __init__(self, config: LlamaConfig, attention_unit: str):
        self.config = config
        self.attention = attention_kind(config, attention_unit)
        self.neurons = neuron_kind(config)
        self.kinds = (self.attention, self.neurons)
        self.removed: Dict[str, Dict[int, List[int]]] = {k.name: {i: [] for i in range(config.num_hidden_layers)}
                                                         for k in self.kinds}

    @property
    def layer_params(self) -> int:
        """All projection weights of a layer (k/v count too when only query heads are pruned)."""
        return sum(projection_sizes(self.config).values())

    # ---- one shot --------------------------------------------------------------------------
    def layer_costs(self, layer, curvatures) -> Dict[str, torch.Tensor]:
        return {kind.name: kind.costs(layer, curvatures) for kind in self.kinds}

    def select(self, costs: Dict[int, Dict[str, torch.Tensor]], density: float) -> None:
        mean_kept = self._globally_kept(costs, density)
        attention, neurons = self.attention, self.neurons
        groups = attention.count // attention.group_size
        per_group = round(mean_kept[attention.name] / groups)
        per_group = max(1, min(per_group, attention.group_size - self._removed_per_group(attention)))
        fixed = self.layer_params - sum(kind.count * kind.params for kind in self.kinds)
        attention_params = per_group * groups * attention.params
        kept_neurons = round((density * self.layer_params - fixed - attention_params) / neurons.params)
        kept_neurons = max(1, min(kept_neurons, neurons.count - self._removed_per_group(neurons)))
        for index, layer_costs in costs.items():
            for kind, keep in ((attention, per_group), (neurons, kept_neurons)):
                self.removed[kind.name][index] = _cheapest(layer_costs[kind.name], kind, keep,
                                                           self.removed[kind.name][index])

    def _removed_per_group(self, kind: UnitKind) -> int:
        first = self.removed[kind.name][0]
        return len(first) // (kind.count // kind.group_size)

    def _globally_kept(self, costs, density: float) -> Dict[str, float]:
        """Mean kept units per layer of each kind under one global cost-per-weight threshold."""
        keys, params, kinds = [], [], []
        for index, layer_costs in costs.items():
            for kind_index, kind in enumerate(self.kinds):
                per_weight = layer_costs[kind.name] / kind.params
                per_weight[self.removed[kind.name][index]] = -float("inf")
                keys.append(per_weight)
                params.append(torch.full((kind.count,), kind.params, dtype=torch.float64))
                kinds.append(torch.full((kind.count,), kind_index))
        order = torch.cat(keys).argsort(stable=True)
        removed_params = torch.cat(params)[order].cumsum(0)
        target = (1.0 - density) * self.layer_params * len(costs)
        n_removed = int((removed_params < target).sum()) + (1 if target > 0 else 0)
        removed_kinds = torch.cat(kinds)[order[:n_removed]]
        return {kind.name: kind.count - float((removed_kinds == i).sum()) / len(costs)
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
