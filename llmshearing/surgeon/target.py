"""An exact target shape for structured LLM Surgeon (``--target``): the counts every layer keeps.

Structured LLM Surgeon removes attention units and MLP neurons, so a target may change only
``num_attention_heads`` / ``num_key_value_heads`` / ``intermediate_size``; which heads and neurons
go is still the curvature's choice, layer by layer. The density that the shot schedule steps
through is the target's share of the source's projection weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from llmshearing.errors import ShapeError
from llmshearing.model.config import LlamaConfig
from llmshearing.shape import TargetShape
from llmshearing.surgeon.units import attention_kind, projection_sizes

KEPT_BY_SURGEON = ("hidden_size", "num_hidden_layers")


@dataclass(frozen=True)
class TargetCounts:
    attention_per_group: int  # attention units kept per group (query heads per KV group, or KV groups)
    neurons: int
    density: float  # the target's share of the source's projection weights


def target_counts(config: LlamaConfig, target: Mapping[str, int], attention_unit: str) -> TargetCounts:
    shape = TargetShape.from_mapping(target, config)
    shape.validate_against(config)
    for key in KEPT_BY_SURGEON:
        if getattr(shape, key) != getattr(config, key):
            raise ShapeError(f"LLM Surgeon structured removes attention heads and MLP neurons only: target {key}="
                             f"{getattr(shape, key)} must equal the source's {getattr(config, key)} "
                             f"(Sheared and Minitron prune {key})")
    kind = attention_kind(config, attention_unit)
    if kind.name == "head":
        if shape.num_key_value_heads != config.num_key_value_heads:
            raise ShapeError(f"--attention-unit head keeps every KV group: target num_key_value_heads="
                             f"{shape.num_key_value_heads} must equal the source's {config.num_key_value_heads} "
                             f"(--attention-unit kv-group removes whole groups)")
        per_group = shape.num_attention_heads // shape.num_key_value_heads
    else:
        if shape.num_attention_heads * config.num_key_value_heads != shape.num_key_value_heads * config.num_attention_heads:
            raise ShapeError(f"whole KV groups are removed (--attention-unit kv-group, or an MHA source): the target "
                             f"must keep the source's {config.query_groups} query heads per KV head, got "
                             f"{shape.num_attention_heads} heads / {shape.num_key_value_heads} KV heads")
        per_group = shape.num_key_value_heads
    density = sum(projection_sizes(shape.config_for(config)).values()) / sum(projection_sizes(config).values())
    return TargetCounts(per_group, shape.intermediate_size, density)
