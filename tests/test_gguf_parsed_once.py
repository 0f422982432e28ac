"""A GGUF model is parsed once: the RoPE check and transformers' reads (config, then weights) share one
``gguf.GGUFReader``, with the same weights as transformers reading the file on its own."""
from __future__ import annotations

import pytest
import torch
import transformers

from llmshearing.convert import load_model
from llmshearing.errors import CheckpointError
from tests.gguf_writer import write_gguf

gguf = pytest.importorskip("gguf")

COMMON = dict(vocab_size=101, hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)


def _gguf(tmp_path, **config):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**COMMON, **config)).eval()
    return write_gguf(model, tmp_path / "model.gguf")


@pytest.fixture
def parses(monkeypatch):
    """The files a real ``gguf.GGUFReader`` is built for, in order."""
    opened = []
    reader = gguf.GGUFReader

    class Counting(reader):
        def __init__(self, path, *args, **kwargs):
            opened.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    return opened


@torch.no_grad()
def test_a_gguf_is_parsed_once_and_reads_as_transformers_reads_it(tmp_path, parses):
    path = _gguf(tmp_path)
    ours = load_model(path).eval()
    assert parses == [str(path)]
    assert gguf.GGUFReader.__name__ == "Counting"  # put back after the load
    alone = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    assert len(parses) > 1  # transformers on its own parses the file again
    tokens = torch.randint(0, COMMON["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(1))
    assert torch.equal(ours(tokens), alone(tokens).logits)


def test_a_rope_scaled_gguf_is_refused_after_the_one_parse(tmp_path, parses):
    path = _gguf(tmp_path, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    with pytest.raises(CheckpointError, match="RoPE scaling"):
        load_model(path)
    assert parses == [str(path)] and gguf.GGUFReader.__name__ == "Counting"
