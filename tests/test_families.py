"""The model families as flags of the one model, with transformers as the oracle: HF round trips,
masked = sliced for every structure, per-layer exports, parameter counts, refusals."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from llmshearing.convert import export_hf, load_model
from llmshearing.errors import CheckpointError
from llmshearing.shape import config_parameters
from llmshearing.slicing import slice_model
from tests.helpers import random_plan

COMMON = dict(vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
# the windows are shorter than the 20-token inputs, so sliding layers differ from full attention
FAMILIES = {
    "llama_with_attention_bias": lambda: transformers.LlamaConfig(**COMMON, attention_bias=True),
    "mistral_sliding_window_head_dim": lambda: transformers.MistralConfig(**COMMON, sliding_window=5, head_dim=12),
    "qwen2_biases_some_sliding_layers": lambda: transformers.Qwen2Config(
        **COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1),
    "qwen2.5_tied": lambda: transformers.Qwen2Config(**{**COMMON, "tie_word_embeddings": True}, rope_theta=1e6),
    "qwen3_qk_norm_head_dim": lambda: transformers.Qwen3Config(
        **COMMON, head_dim=16, use_sliding_window=True, sliding_window=6, max_window_layers=2),
    # local (sliding, own RoPE base) and global layers (scaled RoPE), head_dim != hidden / heads, tied
    "gemma3_text": lambda: transformers.Gemma3TextConfig(
        **{**COMMON, "tie_word_embeddings": True, "num_hidden_layers": 4}, head_dim=12, query_pre_attn_scalar=10,
        sliding_window=5, layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        rope_theta=1000.0, rope_local_base_freq=100.0, rope_scaling={"rope_type": "linear", "factor": 8.0}),
}
CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
           "qwen3": "Qwen3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
TOKENS = torch.randint(0, COMMON["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(1))


def hf_model(name: str):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(FAMILIES[name]()).eval()
    with torch.no_grad():  # larger than init-scale weights (biases and norms too), so mistakes show
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, transformers model, its saved directory, our model loaded from it)."""
    hf = hf_model(request.param)
    folder = tmp_path_factory.mktemp(request.param) / "hf"
    hf.save_pretrained(folder)
    return request.param, hf, folder, load_model(folder).eval()


@torch.no_grad()
def test_hf_to_ours_to_hf_keeps_config_and_logits(family, tmp_path):
    name, hf, _, ours = family
    expected = hf(TOKENS).logits
    assert (ours(TOKENS) - expected).abs().max() <= 1e-4
    out = export_hf(ours, tmp_path / "export")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == hf.config.model_type and "auto_map" not in config
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()  # no remote code
    assert type(back).__name__ == CLASSES[hf.config.model_type]
    for key in ("sliding_window", "layer_types", "attention_bias", "rope_theta", "tie_word_embeddings"):
        assert getattr(back.config, key, None) == getattr(hf.config, key, None), key
    assert head_dim(back.config) == head_dim(hf.config)
    assert (back(TOKENS).logits - expected).abs().max() <= 1e-4


@torch.no_grad()
def test_masked_equals_sliced_and_exports_as_the_familys_class(family, tmp_path):
    name, _, _, ours = family
    plan = random_plan(ours.config, layers=2, kv_heads=1, heads=2, neurons=23, hidden=30, seed=3)
    masked = ours(TOKENS, plan.to_masks())
    sliced = slice_model(ours, plan)
    assert (masked - sliced(TOKENS)).abs().max() <= 1e-4
    assert masked.abs().max() > 1.0
    kept = [layer.source_index for layer in plan.layers]
    assert [sliced.config.window_of(i) for i in range(len(kept))] == [ours.config.window_of(i) for i in kept]
    assert sliced.num_parameters() == config_parameters(sliced.config)
    back = transformers.AutoModelForCausalLM.from_pretrained(export_hf(sliced, tmp_path / "sliced")).eval()
    assert type(back).__name__ == CLASSES[ours.config.model_type]
    assert (back(TOKENS).logits - masked).abs().max() <= 1e-4


@torch.no_grad()
def test_per_layer_sizes_load_with_remote_code_and_generate(family, tmp_path):
    name, _, _, ours = family
    plan = random_plan(ours.config, layers=3, kv_heads=2, heads=4, neurons=30, hidden=40, seed=5)
    plan.layers[1].kept_neurons = plan.layers[1].kept_neurons[:12]
    plan.layers[1].neuron_scale = plan.layers[1].neuron_scale[:12]
    plan.layers[2].kept_kv_heads, plan.layers[2].kept_heads = plan.layers[2].kept_kv_heads[:1], plan.layers[2].kept_heads[:2]
    plan.layers[2].head_scale = plan.layers[2].head_scale[:2]
    sliced = slice_model(ours, plan)
    assert not sliced.config.is_uniform
    out = export_hf(sliced, tmp_path / "per_layer")
    back = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(back).__name__ == f"{CLASSES[ours.config.model_type].removesuffix('ForCausalLM')}ForCausalLMWithLayerSizes"
    assert (back(TOKENS).logits - ours(TOKENS, plan.to_masks())).abs().max() <= 1e-4
    generated = back.generate(TOKENS[:1, :8], max_new_tokens=6, do_sample=False)
    no_cache = back.generate(TOKENS[:1, :8], max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(generated, no_cache)


def test_parameter_counts_match_transformers(family):
    _, hf, _, ours = family
    assert config_parameters(ours.config) == ours.num_parameters() == hf.num_parameters()


@pytest.mark.parametrize("model_type, extra", [
    ("mixtral", dict(num_local_experts=4, num_experts_per_tok=2)),
    ("phi3", {}),
    ("gemma2", {}),
])
def test_an_unsupported_family_stops_at_conversion_naming_it(model_type, extra, tmp_path):
    config = transformers.AutoConfig.for_model(model_type, **COMMON, **extra)
    config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as error:
        load_model(tmp_path)
    message = str(error.value)
    assert f"model_type '{model_type}' is not supported" in message
    assert "llama, mistral, qwen2, qwen3, gemma3_text" in message
    assert "\n" not in message


def test_mlp_biases_are_refused(tmp_path):
    transformers.LlamaConfig(**COMMON, mlp_bias=True).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="MLP biases"):
        load_model(tmp_path)


def test_a_target_breaking_qwens_gqa_grouping_names_the_nearest_valid_shapes():
    from llmshearing.errors import ShapeError
    from llmshearing.model import LlamaConfig
    from llmshearing.shape import TargetShape

    qwen25_05b = LlamaConfig(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                             num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, qkv_bias=True)
    target = TargetShape(hidden_size=640, num_attention_heads=9, num_key_value_heads=2, num_hidden_layers=20,
                         intermediate_size=3000)
    with pytest.raises(ShapeError) as error:
        target.validate_against(qwen25_05b)
    assert str(error.value).endswith("nearest valid: num_attention_heads=10 with num_key_value_heads=2 or "
                                     "num_attention_heads=8 with num_key_value_heads=2 or "
                                     "num_attention_heads=12 with num_key_value_heads=2")


def test_gemma3_with_its_vision_tower_is_refused_naming_the_text_model_way(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {}, "vision_config": {}}))
    with pytest.raises(CheckpointError, match="save Gemma3ForCausalLM.from_pretrained"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", ["qwen2.5_tied", "gemma3_text"])
def test_a_transformers5_config_with_rope_parameters_reads_the_same(name):
    """transformers 5 writes rope_theta / rope_scaling (and Gemma's local base) into rope_parameters."""
    from llmshearing.model import LlamaConfig

    from llmshearing.model.rope import with_v4_rope_keys

    installed = FAMILIES[name]().to_dict()  # v4 or v5 form, as the installed transformers writes it
    v4 = with_v4_rope_keys(installed)
    v4 = {key: value for key, value in v4.items() if key != "rope_parameters"}
    v5 = {key: value for key, value in v4.items() if key not in ("rope_theta", "rope_scaling", "rope_local_base_freq")}
    full = {"rope_theta": v4["rope_theta"], **(v4.get("rope_scaling") or {"rope_type": "default"})}
    v5["rope_parameters"] = full if name != "gemma3_text" else {
        "full_attention": full, "sliding_attention": {"rope_type": "default", "rope_theta": v4["rope_local_base_freq"]}}
    assert LlamaConfig.from_hf(v5) == LlamaConfig.from_hf(v4) == LlamaConfig.from_hf(installed)
    assert LlamaConfig.from_hf(v5).rope_theta != 10000.0


def llama(**overrides):
    from llmshearing.model import LlamaConfig

    return LoadedLlama(LlamaConfig(**{**dict(COMMON, head_dim=8), **overrides}))


def LoadedLlama(config):
    from llmshearing.model.llama import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@torch.no_grad()
def test_a_llama_whose_hidden_size_is_no_multiple_of_its_heads_exports_as_mistral(tmp_path):
    """transformers 5's LlamaConfig refuses hidden 31 with 2 heads even with head_dim; Mistral (no window) is
    the same network and loads in transformers 4 and 5."""
    ours = llama()
    plan = random_plan(ours.config, layers=2, kv_heads=1, heads=2, neurons=23, hidden=31, seed=3)
    masked = ours(TOKENS, plan.to_masks())
    out = export_hf(slice_model(ours, plan), tmp_path / "sliced")
    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["sliding_window"], config["head_dim"]) == ("mistral", None, 8)
    back = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(back).__name__ == "MistralForCausalLM"
    assert (back(TOKENS).logits - masked).abs().max() <= 1e-4
    assert (load_model(out)(TOKENS) - masked).abs().max() <= 1e-4


@torch.no_grad()
def test_a_transformers4_llama_export_of_such_a_shape_still_loads(tmp_path):
    """A LLaMA config.json with hidden 45 and 6 heads of head_dim 8, as transformers 4 wrote them."""
    ours = llama(hidden_size=45, num_attention_heads=6, num_key_value_heads=2)
    out = export_hf(ours, tmp_path / "mistral")
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"], attention_bias=False, mlp_bias=False)
    for key in ("sliding_window",):
        config.pop(key)
    (out / "config.json").write_text(json.dumps(config))
    assert (load_model(out)(TOKENS) - ours(TOKENS)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["gemma3_text", "llama_with_attention_bias"])
def test_a_target_whose_hidden_size_is_no_multiple_of_heads_is_refused_where_no_class_holds_it(name):
    from llmshearing.errors import ShapeError
    from llmshearing.model import LlamaConfig
    from llmshearing.shape import TargetShape

    source = LlamaConfig.from_hf(FAMILIES[name]())
    target = TargetShape(hidden_size=31, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2,
                         intermediate_size=23)
    with pytest.raises(ShapeError) as error:
        target.validate_against(source)
    message = str(error.value)
    assert "to be a multiple of num_attention_heads (2)" in message and "\n" not in message
    assert message.endswith("nearest valid: hidden_size=30 or hidden_size=32")
    plan = random_plan(source, layers=2, kv_heads=1, heads=2, neurons=23, hidden=31, seed=3)
    with pytest.raises(ShapeError, match="pruning plan: .* transformers 5's config class refuses"):
        plan.validate()
