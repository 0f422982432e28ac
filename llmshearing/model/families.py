"""The model families the one model covers, and how each one's Hugging Face config maps onto ours.

A family is a set of flags of the one model (litgpt style), not a model file of its own:

| model_type | q/k/v bias | o bias | q/k RMSNorm | sliding window | other |
|---|---|---|---|---|---|
| llama (LLaMA-2/3.x, SmolLM2) | attention_bias | attention_bias | - | - | |
| mistral (Mistral, Mistral-NeMo) | - | - | - | sliding_window on every layer | |
| qwen2 (Qwen2, Qwen2.5) | yes | - | - | layer_types | |
| qwen3 (dense) | attention_bias | attention_bias | yes | layer_types | |
| gemma3_text (Gemma 3) | attention_bias | attention_bias | yes (1 + w) | layer_types | RMSNorm × (1 + w), embeddings × √hidden, norms after attention and MLP, GELU-tanh, query_pre_attn_scalar, local RoPE base |

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
    gemma: bool = False  # the Gemma 3 flags (see the table above)

    @property
    def activation_key(self) -> str:
        return "hidden_activation" if self.gemma else "hidden_act"


def _attention_bias(hf: dict) -> bool:
    return bool(hf.get("attention_bias", False))


FAMILIES = {family.model_type: family for family in (
    Family("llama", "LlamaConfig", "LlamaForCausalLM", _attention_bias, _attention_bias),
    Family("mistral", "MistralConfig", "MistralForCausalLM", lambda hf: False, lambda hf: False,
           window="every_layer"),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", lambda hf: True, lambda hf: False, window="layer_types"),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", _attention_bias, _attention_bias, qk_norm=True,
           window="layer_types"),
    Family("gemma3_text", "Gemma3TextConfig", "Gemma3ForCausalLM", _attention_bias, _attention_bias, qk_norm=True,
           window="layer_types", gemma=True),
)}
ACTIVATIONS = ("silu", "gelu_pytorch_tanh")


def family_of(model_type: str) -> Family:
    if model_type == "gemma3":
        raise ConfigError("model_type 'gemma3' is Gemma 3 with its vision tower; prune its text model: save "
                          "Gemma3ForCausalLM.from_pretrained(DIR) (model_type gemma3_text) and give that folder")
    if model_type not in FAMILIES:
        raise ConfigError(f"model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)} "
                          "(mixture-of-experts and other architectures are not)")
    return FAMILIES[model_type]


def family_fields(hf: dict) -> dict:
    """Our family fields (model_type, biases, norms, activation, sliding window ...) from an HF config dict."""
    family = family_of(hf.get("model_type", "llama"))
    if hf.get("mlp_bias"):
        raise ConfigError(f"{family.model_type} models with MLP biases (mlp_bias: true) are not supported")
    act = hf.get(family.activation_key) or "silu"
    if act not in ACTIVATIONS:
        raise ConfigError(f"{family.activation_key} {act!r} is not supported for {family.model_type} "
                          f"(supported: {', '.join(ACTIVATIONS)})")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if hf.get(key) is not None:
            raise ConfigError(f"{key} ({hf[key]}) is not supported (Gemma 2 style soft-capping)")
    if hf.get("use_bidirectional_attention"):
        raise ConfigError("use_bidirectional_attention: true is an encoder setting; only causal models are supported")
    layer_types = _layer_types(family, hf)
    fields = {"model_type": family.model_type, "qkv_bias": family.qkv_bias(hf), "o_bias": family.o_bias(hf),
              "qk_norm": family.qk_norm, "layer_types": layer_types, "hidden_act": act,
              "sliding_window": hf.get("sliding_window") if layer_types and SLIDING in layer_types else None}
    if family.gemma:
        fields.update(norm_plus_one=True, scale_embeddings=True, sandwich_norms=True,
                      query_pre_attn_scalar=hf.get("query_pre_attn_scalar"),
                      rope_local_theta=hf.get("rope_local_base_freq", 10000.0))
    return fields


def _layer_types(family: Family, hf: dict) -> Optional[List[str]]:
    layers = hf["num_hidden_layers"]
    if family.window == "every_layer":
        return [SLIDING] * layers if hf.get("sliding_window") else None
    if family.window == "layer_types":
        types = hf.get("layer_types")
        if types and SLIDING in types and hf.get("sliding_window"):
            return list(types)
    return None


def heads_must_divide_hidden(config) -> bool:
    """Whether ``config``'s family has no stock transformers class for a hidden size that is not a multiple of
    the head count: transformers 5's LlamaConfig and Gemma3TextConfig refuse it even with an explicit head_dim.
    A bias-free LLaMA goes out as Mistral instead (``export_family``); Gemma 3 and a LLaMA with attention
    biases have no such twin."""
    return family_of(config.model_type).gemma or (config.model_type == "llama" and config.qkv_bias)


def export_family(config) -> Family:
    """The family whose HF config describes ``config``: its own, except a bias-free LLaMA whose hidden size is
    not a multiple of its head count, which is written as Mistral without a window (the same network,
    whose config class has no such check), so the export loads in transformers 4 and 5 alike."""
    family = family_of(config.model_type)
    if config.hidden_size % config.num_attention_heads == 0:
        return family
    if heads_must_divide_hidden(config):
        raise ConfigError(f"{hidden_multiple_rule(config)}; export a shape whose hidden_size is a multiple of "
                          f"num_attention_heads={config.num_attention_heads}")
    return FAMILIES["mistral"] if family.model_type == "llama" else family


def hidden_multiple_rule(config) -> str:
    what = "a llama model with attention biases" if config.model_type == "llama" else f"a {config.model_type} model"
    return (f"{what} needs hidden_size ({config.hidden_size}) to be a multiple of num_attention_heads "
            f"({config.num_attention_heads}): transformers 5's config class refuses other shapes")


def hf_family_values(config, family: Family) -> dict:
    """The HF config keys that carry our family fields, for ``family`` (``export_family(config)``)'s config class."""
    _check_flags(family, config)
    values: dict = {"architectures": [family.architecture], family.activation_key: config.hidden_act}
    if family.model_type in ("llama", "qwen3", "gemma3_text"):
        values["attention_bias"] = config.qkv_bias
    if family.model_type == "llama":
        values["mlp_bias"] = False
    sliding = config.layer_types is not None and SLIDING in config.layer_types
    all_types = list(config.layer_types) if sliding else [FULL] * config.num_hidden_layers
    if family.window == "every_layer":
        values["sliding_window"] = config.sliding_window if sliding else None
    elif family.gemma:
        values.update(sliding_window=config.sliding_window, layer_types=all_types,
                      query_pre_attn_scalar=config.query_pre_attn_scalar, rope_local_base_freq=config.rope_local_theta,
                      final_logit_softcapping=None, attn_logit_softcapping=None)
    elif family.window == "layer_types":
        values.update(use_sliding_window=sliding, sliding_window=config.sliding_window if sliding else None,
                      layer_types=all_types, max_window_layers=config.num_hidden_layers)
    return values


def _check_flags(family: Family, config) -> None:
    expected = {"qk_norm": family.qk_norm, "qkv_bias": family.qkv_bias({"attention_bias": config.qkv_bias}),
                "norm_plus_one": family.gemma, "scale_embeddings": family.gemma, "sandwich_norms": family.gemma}
    wrong = [name for name, value in expected.items() if getattr(config, name) != value]
    if family.model_type in ("llama", "qwen3", "gemma3_text") and config.qkv_bias != config.o_bias:
        wrong.append("o_bias (one attention_bias for q/k/v and o)")
    if wrong:
        raise ConfigError(f"this model's flags {wrong} do not describe a {family.model_type} model")


def hf_config_class(family: Family):
    import transformers

    return getattr(transformers, family.hf_config_class)
