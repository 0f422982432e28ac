"""The model families the one model covers, and how each one's Hugging Face config maps onto ours.

A family is a set of flags of the one model (litgpt style), not a model file of its own:

| model_type | q/k/v bias | o bias | q/k RMSNorm | sliding window |
|---|---|---|---|---|
| llama (LLaMA-2/3.x, SmolLM2) | attention_bias | attention_bias | - | - |
| mistral (Mistral, Mistral-NeMo) | - | - | - | sliding_window on every layer |
| qwen2 (Qwen2, Qwen2.5) | yes | - | - | layer_types |
| qwen3 (dense) | attention_bias | attention_bias | yes | layer_types |

Everything else (head_dim, rope, tied embeddings, GQA) is a plain field of ``LlamaConfig``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

from llmshearing.errors import ConfigError

FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Family:
    model_type: str
    hf_config_class: str  # in transformers
    architecture: str
    qkv_bias: Callable[[dict], bool]
    o_bias: Callable[[dict], bool]
    qk_norm: bool = False
    window: str = "none"  # none | every_layer (sliding_window applies to all) | layer_types


def _attention_bias(hf: dict) -> bool:
    return bool(hf.get("attention_bias", False))


FAMILIES = {family.model_type: family for family in (
    Family("llama", "LlamaConfig", "LlamaForCausalLM", _attention_bias, _attention_bias),
    Family("mistral", "MistralConfig", "MistralForCausalLM", lambda hf: False, lambda hf: False,
           window="every_layer"),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", lambda hf: True, lambda hf: False, window="layer_types"),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", _attention_bias, _attention_bias, qk_norm=True,
           window="layer_types"),
)}


def family_of(model_type: str) -> Family:
    if model_type not in FAMILIES:
        raise ConfigError(f"model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)} "
                          "(mixture-of-experts and other architectures are not)")
    return FAMILIES[model_type]


def family_fields(hf: dict) -> dict:
    """Our family fields (model_type, biases, q/k norm, sliding window) from an HF config dict."""
    family = family_of(hf.get("model_type", "llama"))
    if hf.get("mlp_bias"):
        raise ConfigError(f"{family.model_type} models with MLP biases (mlp_bias: true) are not supported")
    act = hf.get("hidden_act", hf.get("hidden_activation", "silu"))
    if act != "silu":
        raise ConfigError(f"hidden_act {act!r} is not supported for {family.model_type} (silu)")
    layer_types = _layer_types(family, hf)
    return {"model_type": family.model_type, "qkv_bias": family.qkv_bias(hf), "o_bias": family.o_bias(hf),
            "qk_norm": family.qk_norm, "layer_types": layer_types,
            "sliding_window": hf.get("sliding_window") if layer_types and SLIDING in layer_types else None}


def _layer_types(family: Family, hf: dict) -> Optional[List[str]]:
    layers = hf["num_hidden_layers"]
    if family.window == "every_layer":
        return [SLIDING] * layers if hf.get("sliding_window") else None
    if family.window == "layer_types":
        types = hf.get("layer_types")
        if types and SLIDING in types and hf.get("sliding_window"):
            return list(types)
    return None


def hf_family_values(config) -> dict:
    """The HF config keys that carry our family fields, for ``config.model_type``'s config class."""
    family = family_of(config.model_type)
    values: dict = {"architectures": [family.architecture]}
    if family.model_type in ("llama", "qwen3"):
        if config.qkv_bias != config.o_bias:
            raise ConfigError(f"{family.model_type} has one attention_bias for q/k/v and o")
        values["attention_bias"] = config.qkv_bias
    if family.model_type == "llama":
        values["mlp_bias"] = False
    if family.qk_norm != config.qk_norm or family.qkv_bias({"attention_bias": config.qkv_bias}) != config.qkv_bias:
        raise ConfigError(f"this model's flags do not describe a {family.model_type} model")
    sliding = config.layer_types is not None and SLIDING in config.layer_types
    if family.window == "every_layer":
        values["sliding_window"] = config.sliding_window if sliding else None
    elif family.window == "layer_types":
        values.update(use_sliding_window=sliding, sliding_window=config.sliding_window if sliding else None,
                      layer_types=list(config.layer_types) if sliding else [FULL] * config.num_hidden_layers,
                      max_window_layers=config.num_hidden_layers)
    return values


def hf_config_class(config):
    import transformers

    return getattr(transformers, family_of(config.model_type).hf_config_class)
