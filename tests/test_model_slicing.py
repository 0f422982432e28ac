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


def test_non_uniform_plan_is_rejected():
    config = tiny_config()
    plan = random_plan(config, layers=2, kv_heads=1, heads=3, neurons=11, hidden=20)
    plan.layers[1].kept_neurons = plan.layers[1].kept_neurons[:-1]
    with pytest.raises(ShapeError, match="same sizes in every layer"):
        plan.target_shape()


def test_llama3_rope_scaling_changes_long_wavelengths_only():
    from llmshearing.model.rope import rope_inverse_frequencies

    base = rope_inverse_frequencies(64, 500000.0, None)
    scaled = rope_inverse_frequencies(64, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    assert torch.allclose(scaled[:4], base[:4])  # high frequencies untouched
    assert torch.allclose(scaled[-1], base[-1] / 8)  # lowest frequency divided by the factor
