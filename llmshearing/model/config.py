"""The model's configuration, in Hugging Face `LlamaConfig` vocabulary so conversion is a copy.

Per-layer sizes (a pruning method that learns a different allocation per layer): the optional lists
``intermediate_sizes``, ``num_attention_heads_per_layer`` and ``num_key_value_heads_per_layer`` give
one value per layer and win over the scalar fields, which then hold the largest layer's value.
``head_dim`` and ``hidden_size`` stay the same in every layer, and every layer keeps at least one
MLP neuron and one attention head (a pruned-away block is expressed by removing the whole layer).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

from llmshearing.errors import ConfigError


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: Optional[int] = None
    head_dim: Optional[int] = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None
    tie_word_embeddings: bool = False
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[Any] = 2
    pad_token_id: Optional[int] = None
    initializer_range: float = 0.02
    intermediate_sizes: Optional[List[int]] = None
    num_attention_heads_per_layer: Optional[List[int]] = None
    num_key_value_heads_per_layer: Optional[List[int]] = None
    attn_impl: str = field(default="sdpa", metadata={"hf": False})

    def __post_init__(self):
        self._check_per_layer_sizes()
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}; give head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.is_uniform and self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.attn_impl not in ("sdpa", "flash_attn", "eager"):
            raise ConfigError(f"attn_impl must be sdpa, flash_attn or eager, got {self.attn_impl!r}")
        if not self.is_uniform:
            for index in range(self.num_hidden_layers):
                self.layer_config(index)  # every layer's head counts must form valid KV groups

    def _check_per_layer_sizes(self) -> None:
        """Lists have one positive entry per layer; the scalar fields become the largest entry; a list
        of equal sizes is folded into its scalar field."""
        for name, scalar in PER_LAYER_FIELDS.items():
            sizes = getattr(self, name)
            if sizes is None:
                continue
            sizes = list(sizes)
            if len(sizes) != self.num_hidden_layers:
                raise ConfigError(f"{name} has {len(sizes)} entries for num_hidden_layers={self.num_hidden_layers}")
            if any(not isinstance(size, int) or size < 1 for size in sizes):
                raise ConfigError(f"{name} must hold integers >= 1 (a layer cannot lose its whole attention "
                                  f"or MLP; remove the layer instead), got {sizes}")
            if self.head_dim is None and scalar == "num_attention_heads":
                raise ConfigError(f"{name} needs an explicit head_dim (it is the same in every layer)")
            setattr(self, name, sizes if len(set(sizes)) > 1 else None)  # equal sizes: a plain config
            setattr(self, scalar, max(sizes))

    @property
    def is_uniform(self) -> bool:
        """Every layer has the same sizes (a plain LLaMA config)."""
        return all(getattr(self, name) is None for name in PER_LAYER_FIELDS)

    def layer_config(self, index: int) -> "LlamaConfig":
        """A uniform config with layer ``index``'s sizes (what that decoder layer is built from)."""
        sizes = {scalar: (getattr(self, name) or [getattr(self, scalar)] * self.num_hidden_layers)[index]
                 for name, scalar in PER_LAYER_FIELDS.items()}
        if sizes["num_attention_heads"] % sizes["num_key_value_heads"]:
            raise ConfigError(f"layer {index}: {sizes['num_attention_heads']} attention heads are not divisible "
                              f"into {sizes['num_key_value_heads']} key/value heads")
        no_lists = {name: None for name in PER_LAYER_FIELDS}
        return dataclasses.replace(self, **sizes, **no_lists)

    def require_uniform(self, what: str) -> None:
        if not self.is_uniform:
            sizes = ", ".join(f"{name} {min(values)}-{max(values)}" for name, values in
                              ((n, getattr(self, n)) for n in PER_LAYER_FIELDS) if values)
            raise ConfigError(f"{what} needs the same sizes in every layer; this model has per-layer sizes ({sizes}): "
                              "prune the original model, or export LLM Surgeon's result with --uniform")

    @property
    def query_groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "LlamaConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {unknown}")
        return cls(**values)

    @classmethod
    def from_hf(cls, hf_config) -> "LlamaConfig":
        """Build from a `transformers` config (LLaMA-2/3, Mistral-style, SmolLM2)."""
        hf = hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config)
        model_type = hf.get("model_type", "llama")
        if model_type not in ("llama", "mistral"):
            raise ConfigError(f"model_type {model_type!r} is not supported (llama or mistral)")
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise ConfigError("models with attention/MLP biases are not supported")
        if hf.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act {hf.get('hidden_act')!r} is not supported (silu)")
        if model_type == "mistral" and hf.get("sliding_window"):
            max_pos = hf.get("max_position_embeddings", 4096)
            if hf["sliding_window"] < max_pos:
                raise ConfigError("Mistral sliding-window attention is not supported")
        names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("hf", True)}
        values = {k: hf[k] for k in names if hf.get(k) is not None}
        values["rope_scaling"] = hf.get("rope_scaling")
        values["rope_theta"] = hf.get("rope_theta", 10000.0)
        return cls(**values)

    def to_hf(self):
        """A `transformers.LlamaConfig` describing the same model."""
        from transformers import LlamaConfig as HFLlamaConfig

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("hf", True)}
        values = {k: v for k, v in values.items() if not (k in PER_LAYER_FIELDS and v is None)}
        return HFLlamaConfig(
            **values,
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            architectures=["LlamaForCausalLM"],
            torch_dtype="float32",
        )


# per-layer list → the scalar field it refines
PER_LAYER_FIELDS = {
    "intermediate_sizes": "intermediate_size",
    "num_attention_heads_per_layer": "num_attention_heads",
    "num_key_value_heads_per_layer": "num_key_value_heads",
}
