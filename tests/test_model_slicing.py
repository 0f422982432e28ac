import dataclasses

import pytest
import torch

from llmshearing.errors import ShapeError
from llmshearing.plan import PruningPlan
from llmshearing.slicing import slice_model
from tests.helpers import random_plan, tiny_config, tiny_model

TOKENS = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tied", [False, True])
def test_all_ones_masks_equal_unmasked(tied):
    model = tiny_model(tie_word_embeddings=tied)
    ones = PruningPlan.identity(model.config).to_masks()
    assert torch.equal(model(TOKENS), model(TOKENS, ones))


CASES = {
    "gqa_groups_and_heads": dict(num_attention_heads=6, num_key_value_heads=2),
    "gqa_single_group_kept": dict(num_attention_heads=6, num_key_value_heads=3),
    "mha": dict(num_attention_heads=5, num_key_value_heads=5),
}
PLANS = {
    "gqa_groups_and_heads": dict(layers=2, kv_heads=1, heads=2, neurons=19, hidden=29),
    "gqa_single_group_kept": dict(layers=3, kv_heads=3, heads=3, neurons=23, hidden=31),
    "mha": dict(layers=2, kv_heads=3, heads=3, neurons=17, hidden=27),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("scales", [False, True])
def test_masked_equals_sliced(case, tied, scales):
    model = tiny_model(tie_word_embeddings=tied, **CASES[case])
    plan = random_plan(model.config, seed=sorted(CASES).index(case), scales=scales, **PLANS[case])
    masked = model(TOKENS, plan.to_masks())
    sliced = slice_model(model, plan)
    assert sliced.config.hidden_size == PLANS[case]["hidden"]
    assert sliced.config.num_hidden_layers == PLANS[case]["layers"]
    assert sliced.config.num_attention_heads == PLANS[case]["heads"]
    assert sliced.config.num_key_value_heads == PLANS[case]["kv_heads"]
    assert sliced.config.intermediate_size == PLANS[case]["neurons"]
    assert sliced.config.tie_word_embeddings == tied
    diff = (masked - sliced(TOKENS)).abs().max().item()
    assert diff <= 1e-4, diff
    assert masked.abs().max().item() > 1.0  # the comparison is not between near-zero logits


def test_sliced_parameter_count_matches_config_formula():
    from llmshearing.shape import config_parameters

    model = tiny_model()
    plan = random_plan(model.config, layers=2, kv_heads=1, heads=3, neurons=11, hidden=20)
    sliced = slice_model(model, plan)
    assert sliced.num_parameters() == config_parameters(sliced.config)
    assert model.num_parameters() == config_parameters(model.config)


def test_plan_round_trips_through_json(tmp_path):
    config = tiny_config()
    plan = random_plan(config, layers=2, kv_heads=1, heads=3, neurons=11, hidden=20)
    path = plan.save(tmp_path)
    again = PruningPlan.load(path)
    assert again.to_dict() == plan.to_dict()


def test_plan_with_heads_outside_their_group_is_rejected():
    config = tiny_config()
    plan = random_plan(config, layers=2, kv_heads=1, heads=3, neurons=11, hidden=20)
    plan.layers[0].kept_heads = [0, 1, 5]  # head 5 belongs to KV group 1
    plan.layers[0].kept_kv_heads = [0]
    with pytest.raises(ShapeError, match="do not all belong"):
        plan.validate()


def non_uniform_plan(config, scales=True):
    """Three layers of different sizes: fewer neurons, one KV group less, fewer heads per group."""
    plan = random_plan(config, layers=3, kv_heads=2, heads=4, neurons=30, hidden=40, scales=scales)
    second, third = plan.layers[1], plan.layers[2]
    second.kept_neurons, second.neuron_scale = second.kept_neurons[:9], second.neuron_scale and second.neuron_scale[:9]
    third.kept_kv_heads = third.kept_kv_heads[1:]
    third.kept_heads, third.head_scale = third.kept_heads[2:3], third.head_scale and third.head_scale[2:3]
    return plan


def test_a_non_uniform_plan_has_no_single_target_shape():
    plan = non_uniform_plan(tiny_config())
    with pytest.raises(ShapeError, match="same sizes in every layer"):
        plan.target_shape()


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("scales", [False, True])
def test_non_uniform_plan_slices_to_per_layer_sizes_equal_to_masking(tied, scales):
    model = tiny_model(tie_word_embeddings=tied, hidden_size=48)
    plan = non_uniform_plan(model.config, scales)
    sliced = slice_model(model, plan)
    config = sliced.config
    assert not config.is_uniform
    assert config.intermediate_sizes == [30, 9, 30] and config.intermediate_size == 30
    assert config.num_attention_heads_per_layer == [4, 4, 1] and config.num_key_value_heads_per_layer == [2, 2, 1]
    assert [layer.mlp.down_proj.weight.shape[1] for layer in sliced.model.layers] == [30, 9, 30]
    assert [layer.self_attn.k_proj.weight.shape[0] for layer in sliced.model.layers] == [16, 16, 8]
    masked = model(TOKENS, plan.to_masks())
    assert (masked - sliced(TOKENS)).abs().max().item() <= 1e-4
    assert masked.abs().max().item() > 1.0


def test_uniform_plans_still_give_a_plain_llama_config():
    plan = random_plan(tiny_config(), layers=2, kv_heads=1, heads=3, neurons=11, hidden=20)
    config = plan.target_config()
    assert config.is_uniform and config == plan.target_shape().config_for(plan.source)
    assert "intermediate_sizes" not in config.to_hf().to_dict()


def test_a_layer_without_neurons_or_heads_is_a_clear_error():
    plan = non_uniform_plan(tiny_config())
    plan.layers[1].kept_neurons, plan.layers[1].neuron_scale = [], None
    with pytest.raises(ShapeError, match="layer .*intermediate_size=0 must be at least 1"):
        slice_model(tiny_model(), plan)


def test_a_model_with_per_layer_sizes_is_not_sliced_again():
    from llmshearing.errors import ConfigError

    sliced = slice_model(tiny_model(hidden_size=48), non_uniform_plan(tiny_config(hidden_size=48)))
    with pytest.raises(ConfigError, match="per-layer sizes"):
        PruningPlan.identity(sliced.config)


def test_per_layer_sizes_round_trip_through_hf_and_dict():
    from llmshearing.model import LlamaConfig

    config = tiny_config(intermediate_sizes=[5, 37, 9], num_attention_heads_per_layer=[6, 2, 3],
                         num_key_value_heads_per_layer=[2, 2, 1])
    assert config.intermediate_size == 37 and config.num_attention_heads == 6
    # hidden 45 with 6 heads has no LlamaConfig in transformers 5: it goes out as the same network, Mistral
    exported = dataclasses.replace(config, model_type="mistral")
    assert LlamaConfig.from_hf(config.to_hf()) == exported
    assert LlamaConfig.from_hf(config.to_hf().to_dict()) == exported
    assert LlamaConfig.from_dict(config.to_dict()) == config
    assert config.layer_config(2).num_attention_heads == 3 and config.layer_config(2).is_uniform
    assert tiny_config(intermediate_sizes=[7, 7, 7]) == tiny_config(intermediate_size=7)  # equal sizes fold away


@pytest.mark.parametrize("overrides,message", [
    (dict(intermediate_sizes=[5, 6]), "2 entries for num_hidden_layers=3"),
    (dict(intermediate_sizes=[5, 0, 6]), "integers >= 1"),
    (dict(num_attention_heads_per_layer=[6, 4, 3], num_key_value_heads_per_layer=[2, 3, 1]), "layer 1: 4 attention heads"),
    (dict(head_dim=None, hidden_size=48, num_attention_heads_per_layer=[6, 4, 2]), "explicit head_dim"),
])
def test_bad_per_layer_sizes_are_clear_errors(overrides, message):
    from llmshearing.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_config(**overrides)


def test_sliced_per_layer_parameter_count_matches_config_formula():
    from llmshearing.shape import config_parameters

    sliced = slice_model(tiny_model(hidden_size=48), non_uniform_plan(tiny_config(hidden_size=48)))
    assert sliced.num_parameters() == config_parameters(sliced.config)


@pytest.mark.parametrize("tied", [False, True])
def test_per_layer_export_loads_with_transformers_remote_code_and_our_loader(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    from llmshearing.convert import export_hf, load_model

    model = tiny_model(tie_word_embeddings=tied, hidden_size=48)
    sliced = slice_model(model, non_uniform_plan(model.config))
    out = export_hf(sliced, tmp_path / "per_layer")
    assert (out / "modeling_llmshearing_llama.py").is_file()
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert hf.config.model_type == "llama" and hf.config.intermediate_sizes == [30, 9, 30]
    ours = load_model(out)
    with torch.no_grad():
        expected = sliced(TOKENS)
        assert (hf(TOKENS).logits - expected).abs().max().item() <= 1e-4
        assert (ours(TOKENS) - expected).abs().max().item() <= 1e-4
        cached = hf.generate(TOKENS[:1], max_new_tokens=4, do_sample=False, pad_token_id=0)
        uncached = hf.generate(TOKENS[:1], max_new_tokens=4, do_sample=False, pad_token_id=0, use_cache=False)
    assert torch.equal(cached, uncached)  # the KV cache works with layers of different widths
    hf.save_pretrained(tmp_path / "saved")  # carries the modeling file along
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", trust_remote_code=True).eval()
    with torch.no_grad():
        assert (again(TOKENS).logits - expected).abs().max().item() <= 1e-4


def test_uniform_export_stays_a_plain_llama_directory(tmp_path):
    import json

    from llmshearing.convert import export_hf

    out = export_hf(tiny_model(hidden_size=48), tmp_path / "plain")
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert not (out / "modeling_llmshearing_llama.py").exists()


def test_llama3_rope_scaling_changes_long_wavelengths_only():
    from llmshearing.model.rope import rope_inverse_frequencies

    base = rope_inverse_frequencies(64, 500000.0, None)
    scaled = rope_inverse_frequencies(64, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    assert torch.allclose(scaled[:4], base[:4])  # high frequencies untouched
    assert torch.allclose(scaled[-1], base[-1] / 8)  # lowest frequency divided by the factor


def test_casting_the_model_to_bf16_keeps_the_rope_frequencies_in_fp32():
    from llmshearing.model.rope import rope_inverse_frequencies

    model = tiny_model().to(torch.bfloat16)
    config = model.config
    frequencies = model.model.rope_inv_freq(torch.device("cpu"))
    assert frequencies.dtype == torch.float32
    assert torch.equal(frequencies, rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling))
    assert not any("rope" in name for name in model.state_dict())  # recomputed, never saved or cast
