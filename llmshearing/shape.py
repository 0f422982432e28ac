"""Target shapes in HF config vocabulary: validation against a source model and parameter counts."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

from llmshearing.errors import ShapeError
from llmshearing.model.config import LlamaConfig
from llmshearing.model.families import heads_must_divide_hidden, hidden_multiple_rule

SHAPE_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "intermediate_size")
Number = Union[int, float]


@dataclass(frozen=True)
class TargetShape:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    intermediate_size: int

    @classmethod
    def from_mapping(cls, values: Mapping, source: LlamaConfig | None = None) -> "TargetShape":
        """Build from a mapping; keys left out are taken from ``source`` (unchanged dimension)."""
        values = dict(values)
        unknown = sorted(set(values) - set(SHAPE_KEYS))
        if unknown:
            raise ShapeError(f"unknown target shape keys {unknown}; valid keys are {list(SHAPE_KEYS)}")
        if "num_key_value_heads" not in values and source is not None and "num_attention_heads" in values:
            # keep the source's query-heads-per-KV-head ratio when only the head count is given
            if values["num_attention_heads"] % source.query_groups == 0:
                values["num_key_value_heads"] = values["num_attention_heads"] // source.query_groups
        for key in SHAPE_KEYS:
            if key not in values:
                if source is None:
                    raise ShapeError(f"target shape is missing {key}")
                values[key] = getattr(source, key)
        try:
            return cls(**{k: int(values[k]) for k in SHAPE_KEYS})
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"target shape values must be integers: {values}") from exc

    @classmethod
    def of(cls, config: LlamaConfig) -> "TargetShape":
        return cls(**{k: getattr(config, k) for k in SHAPE_KEYS})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def query_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    def validate_against(self, source: LlamaConfig, whole_model: bool = True) -> None:
        """Raise ShapeError with a one-line reason if this shape cannot be cut out of ``source``
        (ConfigError if ``source`` has per-layer sizes: a target shape is cut from a uniform model).
        ``whole_model=False`` checks one layer's sizes of a per-layer plan, whose export is checked as a whole."""
        source.require_uniform("pruning to a target shape")
        for key in SHAPE_KEYS:
            value, limit = getattr(self, key), getattr(source, key)
            if value < 1:
                raise ShapeError(f"target {key}={value} must be at least 1")
            if value > limit:
                raise ShapeError(f"target {key}={value} is larger than the source model's {limit}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ShapeError(
                f"target num_attention_heads={self.num_attention_heads} is not divisible into "
                f"num_key_value_heads={self.num_key_value_heads} groups; nearest valid: {self._nearest_heads(source)}"
            )
        if self.query_groups > source.query_groups:
            raise ShapeError(
                f"target has {self.query_groups} query heads per KV head but the source has only "
                f"{source.query_groups}: query heads cannot be added to a KV group "
                f"(use num_key_value_heads >= {-(-self.num_attention_heads // source.query_groups)}); "
                f"nearest valid: {self._nearest_heads(source)}"
            )
        if whole_model and not self.exportable_from(source):
            raise ShapeError(f"target {hidden_multiple_rule(self.config_for(source))}; nearest valid: "
                             f"{self._nearest_hidden_sizes(source)}")

    def exportable_from(self, source: LlamaConfig) -> bool:
        """Whether the pruned model has a stock transformers config class (see families.heads_must_divide_hidden)."""
        return self.hidden_size % self.num_attention_heads == 0 or not heads_must_divide_hidden(source)

    def _nearest_hidden_sizes(self, source: LlamaConfig) -> str:
        heads = self.num_attention_heads
        below = self.hidden_size // heads * heads
        sizes = [size for size in (below, below + heads) if 0 < size <= source.hidden_size]
        return " or ".join(f"hidden_size={size}" for size in sizes)

    def _nearest_heads(self, source: LlamaConfig, count: int = 3) -> str:
        """The valid (query heads, KV heads) pairs of ``source`` closest to this target's: whole KV groups,
        each keeping the same number of its query heads."""
        pairs = [(kv * per_group, kv) for kv in range(1, source.num_key_value_heads + 1)
                 for per_group in range(1, source.query_groups + 1)]
        pairs.sort(key=lambda pair: (abs(pair[0] - self.num_attention_heads) + abs(pair[1] - self.num_key_value_heads),
                                     -pair[0]))
        return " or ".join(f"num_attention_heads={heads} with num_key_value_heads={kv}" for heads, kv in pairs[:count])

    def config_for(self, source: LlamaConfig, layers: Sequence[int] | None = None) -> LlamaConfig:
        """The source config with this shape's dimensions (head_dim kept); ``layers`` are the kept
        source layers, whose attention types (full / sliding) the config takes (default: the first ones)."""
        kept = source.with_layers(range(self.num_hidden_layers) if layers is None else layers)
        return dataclasses.replace(kept, **self.to_dict(), head_dim=source.head_dim)


def count_parameters(
    *,
    vocab_size: Number,
    hidden_size: Number,
    num_hidden_layers: Number,
    num_attention_heads: Number,
    num_key_value_heads: Number,
    intermediate_size: Number,
    head_dim: Number,
    tie_word_embeddings: bool,
    qkv_bias: bool = False,
    o_bias: bool = False,
    qk_norm: bool = False,
    sandwich_norms: bool = False,
) -> Number:
    """Exact parameter count of a model of the one architecture (floats allowed for expected sizes)."""
    per_layer = (
        2 * num_attention_heads * head_dim * hidden_size  # q_proj, o_proj
        + 2 * num_key_value_heads * head_dim * hidden_size  # k_proj, v_proj
        + 3 * intermediate_size * hidden_size  # gate, up, down
        + 2 * hidden_size  # two RMSNorms
        + (num_attention_heads + 2 * num_key_value_heads) * head_dim * qkv_bias
        + hidden_size * o_bias
        + 2 * head_dim * qk_norm  # q_norm, k_norm (shared by the heads)
        + 2 * hidden_size * sandwich_norms  # Gemma's norms after attention and MLP
    )
    embeddings = vocab_size * hidden_size * (1 if tie_word_embeddings else 2)
    return num_hidden_layers * per_layer + embeddings + hidden_size


def config_parameters(config: LlamaConfig) -> int:
    if not config.is_uniform:  # per-layer sizes: each layer counted with its own sizes
        layers = [config_parameters(dataclasses.replace(config.layer_config(i), num_hidden_layers=1))
                  for i in range(config.num_hidden_layers)]
        no_layers = config_parameters(dataclasses.replace(config.layer_config(0), num_hidden_layers=0))
        return no_layers + sum(layer - no_layers for layer in layers)
    return int(
        count_parameters(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=config.num_key_value_heads,
            intermediate_size=config.intermediate_size,
            head_dim=config.head_dim,
            tie_word_embeddings=config.tie_word_embeddings,
            **config.parameter_flags,
        )
    )
