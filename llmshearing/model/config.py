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
from llmshearing.model.rope import check_rope_scaling, hf_rope_values, longrope_scaling_from_hf, with_v4_rope_keys


@dataclass
class LlamaConfig:
    model_type: str = field(default="llama", metadata={"hf": False})  # the family (llmshearing.model.families)
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
    # family flags (llmshearing/model/families.py maps them to and from each family's HF config)
    qkv_bias: bool = field(default=False, metadata={"hf": False})
    o_bias: bool = field(default=False, metadata={"hf": False})
    qk_norm: bool = field(default=False, metadata={"hf": False})  # RMSNorm over head_dim on q and k (Qwen3)
    sliding_window: Optional[int] = field(default=None, metadata={"hf": False})
    layer_types: Optional[List[str]] = field(default=None, metadata={"hf": False})  # None: no layer slides
    hidden_act: str = field(default="silu", metadata={"hf": False})  # silu | gelu_pytorch_tanh (Gemma)
    norm_plus_one: bool = field(default=False, metadata={"hf": False})  # RMSNorm scales by 1 + weight (Gemma)
    scale_embeddings: bool = field(default=False, metadata={"hf": False})  # embeddings × √hidden_size (Gemma)
    sandwich_norms: bool = field(default=False, metadata={"hf": False})  # norms after attention and MLP too (Gemma)
    query_pre_attn_scalar: Optional[float] = field(default=None, metadata={"hf": False})  # scores × it^-0.5 (Gemma)
    rope_local_theta: Optional[float] = field(default=None, metadata={"hf": False})  # sliding layers' RoPE base (Gemma 3)

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
        self.rope_scaling = check_rope_scaling(self.rope_scaling, self.head_dim)  # refused here, at conversion
        self._check_layer_types()
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

    def _check_layer_types(self) -> None:
        from llmshearing.model.families import FULL, SLIDING, family_of

        family_of(self.model_type)
        if self.layer_types is None:
            return
        self.layer_types = list(self.layer_types)
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {FULL, SLIDING}:
            raise ConfigError(f"layer_types must hold {self.num_hidden_layers} entries of {FULL!r} or {SLIDING!r}, "
                              f"got {self.layer_types}")
        if SLIDING not in self.layer_types:
            self.layer_types = None  # no layer slides: the plain form
        elif not isinstance(self.sliding_window, int) or self.sliding_window < 1:
            raise ConfigError(f"sliding layers need a positive sliding_window, got {self.sliding_window!r}")

    def window_of(self, index: int) -> Optional[int]:
        """The attention window of layer ``index`` (None: full causal attention)."""
        from llmshearing.model.families import SLIDING

        return self.sliding_window if self.layer_types and self.layer_types[index] == SLIDING else None

    def with_layers(self, indices) -> "LlamaConfig":
        """This config for the source layers ``indices`` (in order): the layer count and their attention types."""
        indices = list(indices)
        types = [self.layer_types[i] for i in indices] if self.layer_types else None
        return dataclasses.replace(self, num_hidden_layers=len(indices), layer_types=types)

    @property
    def parameter_flags(self) -> dict:
        """What besides the sizes decides the parameter count (see ``llmshearing.shape.count_parameters``)."""
        return {"qkv_bias": self.qkv_bias, "o_bias": self.o_bias, "qk_norm": self.qk_norm,
                "sandwich_norms": self.sandwich_norms}

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
        return dataclasses.replace(self, **sizes, **no_lists, layer_types=None)

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
        """Build from a `transformers` config of a supported family (llmshearing.model.families)."""
        from llmshearing.model.families import family_fields

        hf = with_v4_rope_keys(hf_config.to_dict() if hasattr(hf_config, "to_dict") else dict(hf_config))
        family = family_fields(hf)
        names = {f.name for f in dataclasses.fields(cls) if f.metadata.get("hf", True)}
        values = {k: hf[k] for k in names if hf.get(k) is not None}
        values["rope_scaling"] = longrope_scaling_from_hf(hf)
        values["rope_theta"] = hf.get("rope_theta", 10000.0)
        return cls(**values, **family)

    def to_hf(self):
        """The family's `transformers` config (LlamaConfig, Qwen3Config, ...) describing the same model."""
        from llmshearing.model.families import export_family, hf_config_class, hf_family_values

        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("hf", True)}
        values = {k: v for k, v in values.items() if not (k in PER_LAYER_FIELDS and v is None)}
        values.update(hf_rope_values(self.rope_scaling))
        family = export_family(self)
        return hf_config_class(family)(**values, **hf_family_values(self, family), torch_dtype="float32")


# per-layer list → the scalar field it refines
PER_LAYER_FIELDS = {
    "intermediate_sizes": "intermediate_size",
    "num_attention_heads_per_layer": "num_attention_heads",
    "num_key_value_heads_per_layer": "num_key_value_heads",
}
