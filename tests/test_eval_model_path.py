"""`llmshearing eval smollm2`: the shortcut names the GGUF once, and the results say what was scored."""
from __future__ import annotations

import json

import pytest

import llmshearing.assets as assets
import llmshearing.convert.sources as sources
from llmshearing.eval.cli import main
from llmshearing.model import LlamaForCausalLM
from tests.helpers import tiny_config


def test_the_smollm2_shortcut_is_resolved_once(sample_corpus, tmp_path, capsys, monkeypatch):
    try:
        gguf = assets.smollm2_gguf_path()
    except assets.AssetNotFoundError as error:
        pytest.skip(f"SmolLM2 unavailable: {error}")
    lookups, loaded = [], []
    monkeypatch.setattr(assets, "smollm2_gguf_path", lambda: lookups.append(gguf) or gguf)

    def tiny_model_at(path, dtype):  # the real one resolves the path first too, then reads 135M weights
        loaded.append(assets.resolve_model_path(path))
        return LlamaForCausalLM(tiny_config(vocab_size=49152))

    monkeypatch.setattr(sources, "load_model", tiny_model_at)
    out = tmp_path / "smollm2.json"
    code = main(["smollm2", "--data", str(sample_corpus), "--out", str(out), "--max-tokens", "128",
                 "--domains", "prose"])
    assert code == 0, capsys.readouterr().err
    assert loaded == [str(gguf)]
    assert lookups == [gguf]  # the model, its format and its tokenizer all come from that one path
    result = json.loads(out.read_text())
    assert result["model"] == "smollm2" and result["format"] == "gguf" and result["total_tokens"] == 127
