"""Exported models run in EleutherAI's lm-evaluation-harness, offline, on the repo's local task."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmshearing.assets import load_tokenizer
from llmshearing.convert import export_hf
from llmshearing.model import LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "llmshearing" / "eval" / "lm_eval_tasks"
EXAMPLES = sum(1 for line in (TASKS / "corpus_lastword.jsonl").read_text().splitlines() if line.strip())
pytest.importorskip("lm_eval", reason="lm-eval is in the [test] extra")


def offline_env(tmp_path: Path) -> dict:
    """Offline flags, empty caches, and a proxy that refuses every connection: any download fails."""
    env = dict(os.environ)
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"),
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    return env


def run_lm_eval(model_dir: Path, tmp_path: Path, limit: int = 0, model_args: str = "") -> dict:
    out = tmp_path / "lm_eval_out"
    command = [sys.executable, "-m", "lm_eval", "--model", "hf",
               "--model_args", f"pretrained={model_dir},dtype=float32" + (f",{model_args}" if model_args else ""),
               "--include_path", str(TASKS),
               "--tasks", "corpus_lastword", "--device", "cpu", "--batch_size", "8", "--output_path", str(out)]
    command += ["--limit", str(limit)] if limit else []
    result = subprocess.run(command, capture_output=True, text=True, env=offline_env(tmp_path), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    [results_file] = out.rglob("results_*.json")
    payload = json.loads(results_file.read_text())
    assert payload["n-samples"]["corpus_lastword"]["effective"] == (limit or EXAMPLES)
    return payload["results"]["corpus_lastword"]


def test_tiny_exported_model_runs_offline(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    model_dir = export_hf(LlamaForCausalLM(config), tmp_path / "tiny", tokenizer=load_tokenizer())
    scores = run_lm_eval(model_dir, tmp_path)
    assert 0.0 <= scores["acc,none"] <= 1.0
    assert math.isfinite(scores["perplexity,none"]) and scores["perplexity,none"] > 1000  # random weights


def test_per_layer_export_runs_with_trust_remote_code(tmp_path):
    """README: a model with per-layer sizes (LLM Surgeon's default export) needs trust_remote_code=True."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True,
                         intermediate_sizes=[40, 64], num_attention_heads_per_layer=[4, 2],
                         num_key_value_heads_per_layer=[2, 2])
    model_dir = export_hf(LlamaForCausalLM(config), tmp_path / "per_layer", tokenizer=load_tokenizer())
    assert (model_dir / "modeling_llmshearing_llama.py").is_file()
    scores = run_lm_eval(model_dir, tmp_path, limit=8, model_args="trust_remote_code=True")
    assert 0.0 <= scores["acc,none"] <= 1.0
    assert math.isfinite(scores["perplexity,none"]) and scores["perplexity,none"] > 1000  # random weights


@pytest.mark.slow
def test_smollm2_predicts_last_words(tmp_path):
    from llmshearing.assets import smollm2_gguf_path
    from llmshearing.convert.sources import load_model

    model_dir = export_hf(load_model(smollm2_gguf_path()), tmp_path / "smollm2", tokenizer=load_tokenizer())
    scores = run_lm_eval(model_dir, tmp_path, limit=16)  # 16 passages keep it near a minute on CPU
    assert scores["acc,none"] > 0.1 and scores["perplexity,none"] < 1000
