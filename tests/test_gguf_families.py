"""GGUF input for each family, with transformers as the oracle: a tiny random model of the family is written as
an F32 GGUF the way llama.cpp lays it out (tests/gguf_writer.py), then

(a) transformers reads it back with the original model's logits (this validates the writer),
(b) our loader reads it with the original model's logits,
(c) our export of it loads in plain transformers as the class transformers gave the GGUF, same logits;

and a GGUF that transformers cannot read, or would read as a different model, stops with one line."""
from __future__ import annotations

import pytest
import torch
import transformers

from llmshearing.convert import export_hf, load_model
from llmshearing.errors import CheckpointError
from tests.gguf_writer import ARCHITECTURES, write_gguf

pytest.importorskip("gguf")

COMMON = dict(vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=3, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
TIED = {**COMMON, "tie_word_embeddings": True}
# name -> (config, the class transformers builds from the GGUF). Only what a GGUF carries varies: transformers'
# GGUF reader leaves every other config field at the family's default (Qwen3's head_dim 128, Gemma 3's
# query_pre_attn_scalar 256, sliding pattern of 6, local RoPE base 10000; no RoPE scaling, no Mistral window).
FAMILIES = {
    "llama": (lambda: transformers.LlamaConfig(**COMMON, rope_theta=5e4), "LlamaForCausalLM"),
    # llama.cpp writes Mistral as architecture llama under its model-card name: transformers reads a LLaMA,
    # with Mistral-NeMo's explicit head_dim (llama.rope.dimension_count) kept
    "mistral_head_dim": (lambda: transformers.MistralConfig(**COMMON, head_dim=12, sliding_window=None),
                         "LlamaForCausalLM"),
    "qwen2.5_biases": (lambda: transformers.Qwen2Config(**COMMON, rope_theta=1e6), "Qwen2ForCausalLM"),
    "qwen3_qk_norm_tied": (lambda: transformers.Qwen3Config(**TIED, head_dim=128), "Qwen3ForCausalLM"),
    # five local layers (window 5 < the 20-token input) and one global layer, head_dim != hidden / heads
    "gemma3_text": (lambda: transformers.Gemma3TextConfig(**{**TIED, "num_hidden_layers": 6}, head_dim=12,
                                                          sliding_window=5), "Gemma3ForCausalLM"),
}
TOKENS = torch.randint(0, COMMON["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(1))


def random_model(config):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # larger than init-scale weights (norms too), so a missed permutation or +1 shows
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def transformers_reads(model_type: str) -> bool:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return ARCHITECTURES[model_type][0] in GGUF_SUPPORTED_ARCHITECTURES


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, the original transformers model, its GGUF file, the class transformers reads the GGUF as)."""
    make_config, gguf_class = FAMILIES[request.param]
    original = random_model(make_config())
    if not transformers_reads(original.config.model_type):
        pytest.skip(f"transformers {transformers.__version__} cannot read GGUF architecture "
                    f"{ARCHITECTURES[original.config.model_type][0]}")
    path = write_gguf(original, tmp_path_factory.mktemp(request.param) / "model.gguf")
    return request.param, original, path, gguf_class


@torch.no_grad()
def test_transformers_reads_the_written_gguf(family):
    _, original, path, gguf_class = family
    back = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()
    assert type(back).__name__ == gguf_class
    assert (back(TOKENS).logits - original(TOKENS).logits).abs().max() <= 1e-4


@torch.no_grad()
def test_gguf_to_ours_to_hf_keeps_logits(family, tmp_path):
    _, original, path, gguf_class = family
    expected = original(TOKENS).logits
    ours = load_model(path).eval()
    assert (ours(TOKENS) - expected).abs().max() <= 1e-4
    back = transformers.AutoModelForCausalLM.from_pretrained(export_hf(ours, tmp_path / "export")).eval()
    assert type(back).__name__ == gguf_class  # the family's own class, no remote code
    assert (back(TOKENS).logits - expected).abs().max() <= 1e-4


# name -> (config, general.name or None, what the one line says)
REFUSED = {
    # transformers maps it to architecture "mistral", which gguf-py does not know
    "mistral_named_mistral": (lambda: transformers.MistralConfig(**COMMON, sliding_window=None), "mistral",
                              "cannot be read as a GGUF model"),
    # transformers ignores qwen3.attention.key_length and builds head_dim 128: a size mismatch
    "qwen3_head_dim_16": (lambda: transformers.Qwen3Config(**COMMON, head_dim=16), None,
                          "cannot be read as a GGUF model"),
    # transformers reads it; our model has no Phi-3 family
    "phi3": (lambda: transformers.Phi3Config(**COMMON, pad_token_id=0, bos_token_id=1, eos_token_id=2), None,
             "model_type 'phi3' is not supported"),
    # transformers reads these without their RoPE scaling: a different model than the file holds
    "llama3_rope_freqs": (lambda: transformers.LlamaConfig(**COMMON, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}), None, "RoPE scaling"),
    "gemma3_linear_rope_scaling": (lambda: transformers.Gemma3TextConfig(
        **TIED, head_dim=12, rope_scaling={"rope_type": "linear", "factor": 8.0}), None, "RoPE scaling"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unreadable_gguf_stops_with_one_line(name, tmp_path):
    make_config, general_name, message = REFUSED[name]
    path = write_gguf(random_model(make_config()), tmp_path / "model.gguf", name=general_name)
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)
