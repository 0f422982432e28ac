import pytest

from llmshearing.model import LlamaConfig
from llmshearing.shape import TargetShape, config_parameters

LLAMA2_7B = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False)


def test_llama2_7b_parameter_count():
    assert config_parameters(LLAMA2_7B) == 6_738_415_616


@pytest.mark.parametrize("dims,nominal", [
    ((2560, 20, 20, 32, 6912), 2.7e9),
    # published as "1.3B"; the checkpoint holds 1.345B parameters (3.5% above the rounded name)
    ((2048, 16, 16, 24, 5504), 1.35e9),
])
def test_sheared_llama_paper_targets(dims, nominal):
    hidden, heads, kv, layers, d_ff = dims
    target = TargetShape(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                         num_hidden_layers=layers, intermediate_size=d_ff)
    target.validate_against(LLAMA2_7B)
    config = target.config_for(LLAMA2_7B)
    assert config.head_dim == 128
    assert config_parameters(config) == pytest.approx(nominal, rel=0.03)
