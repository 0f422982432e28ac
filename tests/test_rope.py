"""RoPE scaling with transformers as the oracle: every rope_scaling type transformers defines for the
supported families gives transformers' logits on inputs shorter and longer than the original context,
before and after an HF export; an unknown type or a dict missing a required key stops at load."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

from llmshearing.convert import export_hf, load_model
from llmshearing.errors import CheckpointError, ConfigError
from llmshearing.model import LlamaConfig
from llmshearing.model.rope import with_v4_rope_keys

COMMON = dict(vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
              num_key_value_heads=2, tie_word_embeddings=False)
LLAMA = dict(COMMON, head_dim=16)  # 8 frequencies, so that yarn's ramp and llama3's bands have room
SHORT, LONG = 10, 40  # the original context below is 16 positions: 40 tokens take the long-context branch
LONGROPE = dict(short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
                long_factor=[1.0, 1.5, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0])

CASES = {
    "none": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=16),
    "default": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=16,
                                                rope_scaling={"rope_type": "default"}),
    "linear": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=16,
                                               rope_scaling={"rope_type": "linear", "factor": 2.5}),
    "dynamic": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=16,
                                                rope_scaling={"rope_type": "dynamic", "factor": 3.0}),
    # rope_theta 100: LLaMA-3's three bands (kept, smoothed, divided) all occur among 8 frequencies
    "llama3": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=64, rope_theta=100.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "yarn": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=64, rope_scaling={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
    "yarn_mscale_betas_no_truncate": lambda: transformers.LlamaConfig(
        **LLAMA, max_position_embeddings=64, rope_theta=5000.0, rope_scaling={
            "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 1.0,
            "mscale_all_dim": 0.5, "beta_fast": 16.0, "beta_slow": 2.0, "truncate": False}),
    "yarn_without_original_context": lambda: transformers.LlamaConfig(
        **LLAMA, max_position_embeddings=16,
        rope_scaling={"rope_type": "yarn", "factor": 2.0, "attention_factor": 1.3}),
    # Phi-3 style: the original context is the top-level original_max_position_embeddings
    "longrope": lambda: transformers.LlamaConfig(
        **LLAMA, max_position_embeddings=64, original_max_position_embeddings=16,
        rope_scaling={"rope_type": "longrope", **LONGROPE}),
    "longrope_factor": lambda: transformers.LlamaConfig(**LLAMA, max_position_embeddings=16, rope_scaling={
        "rope_type": "longrope", "factor": 4.0, **LONGROPE}),
    # Qwen2.5's long-context recipe (the legacy "type" key, as in Qwen's model cards)
    "qwen2.5_yarn": lambda: transformers.Qwen2Config(**COMMON, max_position_embeddings=64, rope_theta=1e6,
                                                     rope_scaling={"type": "yarn", "factor": 4.0,
                                                                   "original_max_position_embeddings": 16}),
}
TOKENS = {length: torch.randint(0, COMMON["vocab_size"], (2, length), generator=torch.Generator().manual_seed(length))
          for length in (SHORT, LONG)}


def hf_model(config):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger than init-scale weights, so that rotation mistakes show in the logits
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


@torch.no_grad()
def hf_logits(model):
    """Short input first: transformers' dynamic RoPE keeps the longest length seen (a fresh model's view)."""
    return {length: model(tokens).logits for length, tokens in TOKENS.items()}


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    """(name, transformers model, its logits, our model loaded from its saved directory)."""
    hf = hf_model(CASES[request.param]())
    folder = tmp_path_factory.mktemp(request.param) / "hf"
    hf.save_pretrained(folder)
    return request.param, hf, hf_logits(hf), load_model(folder).eval()


@torch.no_grad()
def test_logits_match_transformers_short_and_long_and_after_export(case, tmp_path):
    name, hf, expected, ours = case
    for length, tokens in TOKENS.items():
        assert expected[length].abs().max() > 1.0
        assert max_diff(ours(tokens), expected[length]) <= 1e-4, (name, length)
    back = transformers.AutoModelForCausalLM.from_pretrained(export_hf(ours, tmp_path / "export")).eval()
    # transformers 5 keeps rope_theta / rope_scaling inside rope_parameters: compare them in v4 form
    back_keys, hf_keys = with_v4_rope_keys(back.config.to_dict()), with_v4_rope_keys(hf.config.to_dict())
    for key in ("rope_scaling", "rope_theta", "max_position_embeddings"):
        assert back_keys.get(key) == hf_keys.get(key), key
    assert getattr(back.config, "original_max_position_embeddings", None) == \
        getattr(hf.config, "original_max_position_embeddings", None)
    for length, logits in hf_logits(back).items():
        assert max_diff(logits, expected[length]) <= 1e-4, (name, length)


@torch.no_grad()
def test_cos_sin_equal_transformers_rotary_embedding(case):
    """The frequencies and the attention factor are transformers' own, computed the same way."""
    name, hf, _, ours = case
    for length in (SHORT, LONG):
        positions = torch.arange(length)
        rotary = type(hf.model.rotary_emb)(hf.config)  # a fresh one: dynamic RoPE keeps state
        x = torch.zeros(1, dtype=torch.float32)
        hf_cos, hf_sin = rotary(x, positions[None])
        cos, sin = ours.model.rope_cos_sin(positions, torch.float32)
        assert max_diff(cos, hf_cos[0]) <= 1e-6 and max_diff(sin, hf_sin[0]) <= 1e-6, (name, length)


def test_length_dependent_types_switch_at_the_original_context():
    config = LlamaConfig(**LLAMA, max_position_embeddings=16, rope_scaling={"rope_type": "dynamic", "factor": 3.0})
    from llmshearing.model import LlamaForCausalLM

    model = LlamaForCausalLM(config).to(torch.bfloat16).model
    cpu = torch.device("cpu")
    short, at_limit, long, longer = (model.rope_inv_freq(cpu, n) for n in (SHORT, 16, LONG, 2 * LONG))
    assert short.dtype == long.dtype == torch.float32
    assert torch.equal(short, at_limit) and torch.equal(short, model.rope_inv_freq(cpu))
    assert long[0] == short[0] == 1.0 and (long[1:] < short[1:]).all()  # a larger base; the first is base^0
    assert (longer[1:] < long[1:]).all()

    longrope = LlamaConfig(**LLAMA, max_position_embeddings=64, rope_scaling={
        "rope_type": "longrope", "original_max_position_embeddings": 16, **LONGROPE})
    model = LlamaForCausalLM(longrope).model
    assert torch.equal(model.rope_inv_freq(cpu, 16), model.rope_inv_freq(cpu))
    assert not torch.equal(model.rope_inv_freq(cpu, 17), model.rope_inv_freq(cpu, 16))
    assert LlamaConfig.from_dict(longrope.to_dict()).rope_scaling == longrope.rope_scaling


def save_config(folder, rope_scaling):
    """A saved tiny LLaMA config whose config.json holds ``rope_scaling`` as written (no weights: the
    refusal must come from the config, before anything else is read)."""
    transformers.LlamaConfig(**LLAMA, max_position_embeddings=16).save_pretrained(folder)
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["rope_scaling"] = rope_scaling
    path.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("rope_scaling, rope_type", [
    ({"rope_type": "su", **LONGROPE}, "su"),  # Phi-3's old name for longrope
    ({"type": "ntk_by_parts_made_up", "factor": 2.0}, "ntk_by_parts_made_up"),
])
def test_an_unknown_rope_type_is_refused_at_load_naming_it_and_the_supported_ones(tmp_path, rope_scaling, rope_type):
    with pytest.raises(CheckpointError) as error:
        load_model(save_config(tmp_path, rope_scaling))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message
    assert f"rope_scaling type {rope_type!r} is not supported" in message
    assert "default, linear, dynamic, yarn, longrope, llama3" in message


def test_a_yarn_dict_without_factor_is_refused_at_load(tmp_path):
    with pytest.raises(CheckpointError) as error:
        load_model(save_config(tmp_path, {"rope_type": "yarn", "original_max_position_embeddings": 8}))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and "yarn" in message and "factor" in message


@pytest.mark.parametrize("rope_scaling, words", [
    ({"rope_type": "yarn", "beta_fast": 32.0}, ("'yarn' is missing required key(s) factor", "supported types")),
    ({"rope_type": "llama3", "factor": 8.0}, ("'llama3' is missing", "low_freq_factor", "original_max_position")),
    ({"rope_type": "longrope", "short_factor": [1.0] * 8}, ("'longrope' is missing", "long_factor")),
    ({"rope_type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 8, "factor": 2.0}, ("8 numbers",)),
    ({"rope_type": "dynamic", "factor": None}, ("'dynamic' is missing required key(s) factor",)),
    ({"rope_type": "linear", "factor": "2"}, ("factor must be a positive number",)),
    ({"factor": 2.0}, ("has no rope_type", "default, linear, dynamic, yarn, longrope, llama3")),
    ({"rope_type": "mrope"}, ("'mrope' is not supported; supported: default, linear",)),
])
def test_our_config_refuses_bad_rope_scaling_in_one_line(rope_scaling, words):
    with pytest.raises(ConfigError) as error:
        LlamaConfig(**LLAMA, max_position_embeddings=16, rope_scaling=rope_scaling)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message
