"""Weight-level pruning decisions: unstructured and 2:4 semi-structured.

Allocation ``matrix`` (default): every projection of every layer goes to the shot's density, and
its mask is chosen while its correlated update sweeps over the input columns (a block of columns at
a time, from the weights as updated so far: ``KroneckerCurvature.prune_weights``). No costs of other
layers are needed, so the layers are pruned one at a time and their curvature freed at once.

Allocation ``global`` (the LLM Surgeon paper's): one threshold over the costs of all layers.
Unstructured: exactly round((1 - density) × prunable weights) weights are removed, the cheapest
over all layers. 2:4: in every group of four consecutive inputs of a row, the two cheapest weights
are candidates; earlier shots remove the globally cheapest candidates (never more than two per
group), and the last shot (density 0.5) removes every candidate, so each group ends with exactly
two zeros. Weights removed in an earlier shot stay removed (both allocations).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict

import torch

from llmshearing.errors import ShapeError
from llmshearing.model.config import LlamaConfig
from llmshearing.plan import PruningPlan
from llmshearing.surgeon.choices import GLOBAL, MATRIX, TWO_FOUR
from llmshearing.surgeon.curvature import IdentityCurvature
from llmshearing.surgeon.selection import select_smallest
from llmshearing.surgeon.units import projection_sizes

GROUP = 4


def two_four_candidates(costs: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Costs with everything but the two cheapest of each group of four set to +inf
    (already removed weights count as the cheapest)."""
    ranked = costs.masked_fill(removed, -float("inf")).view(costs.shape[0], -1, GROUP)
    order = ranked.argsort(dim=-1, stable=True)
    excluded = torch.ones_like(ranked, dtype=torch.bool).scatter_(-1, order[..., :GROUP // 2], False)
    return costs.masked_fill(excluded.view_as(costs), float("inf"))


class SparsePruning:
    def __init__(self, config: LlamaConfig, pattern: str, allocation: str = MATRIX, row_scaled: bool = False):
        self.config, self.pattern, self.allocation, self.row_scaled = config, pattern, allocation, row_scaled
        self.projections = list(projection_sizes(config))
        self.masks: Dict[int, Dict[str, torch.Tensor]] = {}
        if pattern == TWO_FOUR:
            c = config
            inputs = {"hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
                      "num_attention_heads x head_dim": c.num_attention_heads * c.head_dim}
            odd = {name: size for name, size in inputs.items() if size % GROUP}
            if odd:
                raise ShapeError(f"2:4 sparsity needs layer input sizes divisible by 4; {odd} are not")

    @property
    def selects_globally(self) -> bool:
        """True: costs of every layer, then one selection (``layer_costs``, ``select``, ``apply``);
        False: each layer is pruned on its own (``prune_layer``)."""
        return self.allocation == GLOBAL

    # ---- one shot --------------------------------------------------------------------------
    @torch.no_grad()
    def prune_layer(self, index: int, layer, curvatures, density: float) -> None:
        """Every projection of ``layer`` to ``density``: masks chosen during the update."""
        for name in self.projections:
            weight = layer.get_submodule(name).weight
            forced = self._removed(index, name, weight.shape).to(weight.device)
            mask = curvatures[name].prune_weights(weight, density, forced, two_four=self.pattern == TWO_FOUR,
                                                  row_scaled=self.row_scaled)
            self.masks.setdefault(index, {})[name] = mask.cpu()

    def layer_costs(self, layer, curvatures) -> Dict[str, torch.Tensor]:
        return {name: curvatures[name].weight_costs(layer.get_submodule(name).weight).cpu() for name in self.projections}

    def _removed(self, index: int, name: str, shape) -> torch.Tensor:
        return self.masks.get(index, {}).get(name, torch.zeros(shape, dtype=torch.bool))

    def select(self, costs: Dict[int, Dict[str, torch.Tensor]], density: float) -> None:
        keys = [(index, name) for index in costs for name in self.projections]
        cost_list = [costs[i][n] for i, n in keys]
        forced = [self._removed(i, n, c.shape) for (i, n), c in zip(keys, cost_list)]
        if self.pattern == TWO_FOUR:
            cost_list = [two_four_candidates(c, f) for c, f in zip(cost_list, forced)]
        total = sum(c.numel() for c in cost_list)
        chosen = select_smallest(cost_list, round((1.0 - density) * total), forced)
        for (index, name), mask in zip(keys, chosen):
            self.masks.setdefault(index, {})[name] = mask

    @torch.no_grad()
    def apply(self, index: int, layer, curvatures) -> None:
        for name, mask in self.masks.get(index, {}).items():
            weight = layer.get_submodule(name).weight
            curvatures[name].remove_weights(weight, mask.to(weight.device))

    def zero(self, model) -> None:
        for index, layer in enumerate(model.model.layers):
            self.apply(index, layer, defaultdict(IdentityCurvature))

    # ---- results ---------------------------------------------------------------------------
    def projection_density(self, index: int) -> Dict[str, float]:
        masks = self.masks.get(index, {})
        return {name: 1.0 - int(masks[name].sum()) / masks[name].numel() if name in masks else 1.0
                for name in self.projections}

    def plan(self, model) -> PruningPlan:
        """Same shape as the source; the pruned weights are the exported model itself."""
        return PruningPlan.identity(self.config, method="llm-surgeon")
