"""`python -m llmshearing.prune minitron`: tiny HF model + the sample corpus, search, reuse, bad input."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from llmshearing.convert import export_hf
from llmshearing.errors import ShapeError
from llmshearing.minitron.candidates import candidate_shapes, parse_budget, shape_parameters
from llmshearing.model import LlamaConfig, LlamaForCausalLM
from llmshearing.plan import PruningPlan
from llmshearing.prune.cli import main
from llmshearing.shape import config_parameters
from llmshearing.slicing import slice_model
from tests.test_convert import save_tiny_tokenizer

CONFIG = LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                     num_attention_heads=6, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
TARGET = "hidden_size=32,num_attention_heads=2,num_key_value_heads=1,num_hidden_layers=3,intermediate_size=40"
FAST = ("--calib-samples", "10", "--seq-len", "32", "--batch-size", "5")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("source") / "hf"
    export_hf(LlamaForCausalLM(CONFIG), folder)
    save_tiny_tokenizer(folder, CONFIG.vocab_size)
    return folder


def prune(capsys, *args):
    code = main(["minitron", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@torch.no_grad()
def test_cli_prunes_to_the_target_and_exports_a_model_transformers_loads(source, sample_corpus, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmshearing.convert import load_model

    out = tmp_path / "pruned"
    code, stdout, err = prune(capsys, "--model", source, "--data", sample_corpus, "--out", out,
                              "--target", TARGET, *FAST)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    assert "calibration: 10 sequences of 32 tokens" in err and "scoring the model" in err  # progress as it goes
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    config = hf.config
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
            config.num_hidden_layers, config.intermediate_size) == (32, 2, 1, 3, 40)
    assert AutoTokenizer.from_pretrained(out).vocab_size == CONFIG.vocab_size
    plan = PruningPlan.load(out)
    assert plan.method == "minitron"
    ours = slice_model(load_model(source), plan)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    assert (hf(ids).logits - ours(ids)).abs().max() <= 1e-5
    scores = json.loads((out / "importance.json").read_text())
    assert scores["metadata"]["calibration"]["samples"] == 10 and len(scores["heads"]) == 4

    # the saved scores re-slice to another target without the corpus being read again
    again = tmp_path / "again"
    code, _, err = prune(capsys, "--model", source, "--data", tmp_path / "no-corpus", "--out", again,
                         "--importance", out / "importance.json", "--target", "hidden_size=40,num_hidden_layers=2")
    assert code == 0, err
    assert PruningPlan.load(again).target_shape().hidden_size == 40


def test_cli_options_lm_loss_depth_and_ordering(source, sample_corpus, tmp_path, capsys):
    out = tmp_path / "ordered"
    code, _, err = prune(capsys, "--model", source, "--data", sample_corpus, "--out", out, "--target", TARGET,
                         "--order", "width-first", "--depth-metric", "lm_loss", "--depth-selection", "contiguous",
                         "--seq-agg", "l2", "--batch-agg", "mean", *FAST)
    assert code == 0, err
    scores = json.loads((out / "importance.json").read_text())
    assert scores["metadata"]["first_stage"]["axis"] == "width"
    assert scores["metadata"]["aggregation"] == {"sequence": "l2", "batch": "mean"}
    kept = [layer.source_index for layer in PruningPlan.load(out).layers]
    assert kept in ([1, 2, 3], [0, 1, 2], [0, 1, 3], [0, 2, 3])  # one layer dropped
    assert "lm_loss" in scores["depth"]


def test_search_ranks_candidates_within_the_budget_and_exports_the_best(source, sample_corpus, tmp_path, capsys):
    out = tmp_path / "searched"
    budget = int(1.02 * config_parameters(LlamaConfig(**{**CONFIG.to_dict(), "hidden_size": 36})))
    code, _, err = prune(capsys, "--model", source, "--data", sample_corpus, "--out", out, "--search",
                         "--param-budget", budget, "--max-candidates", "3", "--eval-batches", "1",
                         "--retrain-top", "1", "--retrain-steps", "2", *FAST)
    assert code == 0, err
    with open(out / "search.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == [1, 2, 3]
    assert all(0.95 * budget <= int(r["parameters"]) <= budget for r in rows)
    assert rows[0]["loss_retrained"] and not rows[1]["loss_retrained"]
    assert float(rows[1]["loss_pruned"]) <= float(rows[2]["loss_pruned"])
    assert "| rank |" in (out / "search.md").read_text()
    best = PruningPlan.load(out).target_shape()
    assert best.to_dict() == {k: int(rows[0][k]) for k in best.to_dict()}


def test_candidate_shapes_are_valid_spread_and_inside_the_window():
    budget = int(1.02 * config_parameters(LlamaConfig(**{**CONFIG.to_dict(), "hidden_size": 30})))
    shapes = candidate_shapes(CONFIG, budget, tolerance=0.05, limit=5)
    assert len(shapes) == 5 and len(set(shapes)) == 5
    for shape in shapes:
        shape.validate_against(CONFIG)
        assert 0.95 * budget <= shape_parameters(shape, CONFIG) <= budget
    assert parse_budget("70M") == 70_000_000 and parse_budget("1.5b") == 1_500_000_000 and parse_budget("900") == 900


@pytest.mark.parametrize("args, message", [
    (["--target", "hidden_size=64"], "larger than the source"),
    (["--target", "num_attention_heads=4,num_key_value_heads=1"], "query heads per KV head"),
    (["--target", "num_attention_heads=5,num_key_value_heads=2"], "not divisible"),
    (["--target", "hidden_size=32", "--calib-samples", "0"], "calibration set is empty"),
    (["--search", "--param-budget", "1K"], "smaller than the smallest candidate"),
    (["--search", "--param-budget", "lots"], "not a number"),
    (["--search"], "needs --param-budget"),
    (["--search", "--param-budget", "1M", "--order", "depth-first"], "--order joint"),
    (["--target", "hidden_size=32", "--order", "lm_loss"], None),  # argparse rejects the choice
])
def test_bad_input_is_one_error_line_and_writes_nothing(source, sample_corpus, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    if message is None:
        with pytest.raises(SystemExit):
            prune(capsys, "--model", source, "--data", sample_corpus, "--out", out, *args)
    else:
        code, _, err = prune(capsys, "--model", source, "--data", sample_corpus, "--out", out, *FAST, *args)
        assert code == 2
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and message in lines[0], err
    assert not out.exists() and not list(tmp_path.glob("out*"))


def test_importance_file_of_another_model_is_rejected(source, sample_corpus, tmp_path, capsys):
    from llmshearing.minitron import Importance

    other = Importance.random(LlamaConfig(**{**CONFIG.to_dict(), "intermediate_size": 32}))
    code, _, err = prune(capsys, "--model", source, "--data", sample_corpus, "--out", tmp_path / "out",
                         "--importance", other.save(tmp_path / "scores.json"), "--target", TARGET)
    assert code == 2 and "computed for another model" in err
    assert not (tmp_path / "out").exists()


def test_budget_above_the_source_is_a_shape_error():
    with pytest.raises(ShapeError, match="not below the source"):
        candidate_shapes(CONFIG, config_parameters(CONFIG) + 1)


@pytest.mark.parametrize("mode", [("--target", TARGET), ("--search", "--param-budget", "3M")])
def test_a_per_layer_source_is_refused_with_the_way_out(sample_corpus, tmp_path, capsys, mode):
    """LLM Surgeon's default export (per-layer sizes) cannot be pruned to a uniform shape again."""
    torch.manual_seed(0)
    per_layer = LlamaConfig(**{**CONFIG.to_dict(), "intermediate_sizes": [64, 20, 40, 64],
                               "num_attention_heads_per_layer": [6, 2, 4, 6]})
    folder = tmp_path / "per_layer"
    export_hf(LlamaForCausalLM(per_layer), folder)
    save_tiny_tokenizer(folder, CONFIG.vocab_size)
    code, _, err = prune(capsys, "--model", folder, "--data", sample_corpus, "--out", tmp_path / "out", *mode, *FAST)
    assert code == 2 and not (tmp_path / "out").exists()
    assert err.count("\n") == 1 and "per-layer sizes (intermediate_sizes 20-64, num_attention_heads_per_layer 2-6)" in err
    assert "export LLM Surgeon's result with --uniform" in err
