"""Up-front memory estimate for K-FAC factors and the split of layers into blocks that fit a budget.

Per layer the factors are A for the four distinct projection inputs (q/k/v share one, gate/up share
one) and G for the seven projection outputs, each held with its inverse in fp32. A block of layers
is estimated in one pass over the calibration data; more blocks mean more passes, not more memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from llmshearing.model.config import LlamaConfig

FP32_BYTES = 4
GB = 1024 ** 3
DEFAULT_BUDGET_FRACTION = 0.5  # of the memory available when pruning starts


def factor_elements_per_layer(config: LlamaConfig) -> int:
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    inputs = d * d + q * q + d * d + f * f  # attention input, o_proj input, MLP input, down_proj input
    outputs = q * q + 2 * kv * kv + d * d + 2 * f * f + d * d  # q, k, v, o, gate, up, down
    return inputs + outputs


def factor_bytes_per_layer(config: LlamaConfig) -> int:
    return 2 * FP32_BYTES * factor_elements_per_layer(config)  # each factor and its inverse


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass
class FactorBudget:
    per_layer: int
    layers: int
    budget: int
    available: int

    @property
    def layers_per_block(self) -> int:
        return max(1, min(self.layers, self.budget // max(self.per_layer, 1)))

    def blocks(self, layer_indices: List[int]) -> List[List[int]]:
        size = self.layers_per_block
        return [layer_indices[i:i + size] for i in range(0, len(layer_indices), size)]

    def describe(self) -> str:
        passes = -(-self.layers // self.layers_per_block)
        return (f"K-FAC factors: {self.per_layer / GB:.2f} GB per layer, {self.per_layer * self.layers / GB:.2f} GB "
                f"for all {self.layers} layers; budget {self.budget / GB:.2f} GB of {self.available / GB:.2f} GB "
                f"available -> {self.layers_per_block} layers per block, {passes} curvature pass(es) per estimate")

    def warning(self) -> Optional[str]:
        if self.per_layer > self.available:
            return (f"warning: one layer's K-FAC factors need {self.per_layer / GB:.2f} GB but only "
                    f"{self.available / GB:.2f} GB are available; expect an out-of-memory error")
        return None


def factor_budget(config: LlamaConfig, device: torch.device, budget_gb: Optional[float] = None) -> FactorBudget:
    available = available_bytes(device)
    budget = int(budget_gb * GB) if budget_gb is not None else int(available * DEFAULT_BUDGET_FRACTION)
    return FactorBudget(factor_bytes_per_layer(config), config.num_hidden_layers, budget, available)
