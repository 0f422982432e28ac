"""End-to-end pruning runs through train.py (Composer Trainer, real MDS corpus) and their errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmshearing.config import load_config
from llmshearing.convert import load_composer_model
from llmshearing.sheared.l0_state import rebuild_l0_module
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.plan import PruningPlan
from llmshearing.shape import TargetShape

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "yamls" / "tiny_prune.yaml"


def train(*overrides, yaml=TINY):
    return subprocess.run([sys.executable, str(REPO / "train.py"), str(yaml), *map(str, overrides)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def last_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def tiny_run(sample_corpus, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_run")
    result = train(f"data.path={sample_corpus}", f"save_folder={folder}")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def test_tiny_run_reaches_the_target_sizes(tiny_run):
    cfg = load_config(TINY)
    model, l0_state = load_composer_model(tiny_run / "latest-rank0.pt")
    l0 = rebuild_l0_module(model.config, l0_state)
    finals = l0.target_fractions()
    expected = {name: float(value.detach()) for name, value in l0.expected_sizes().items()}
    assert set(expected) == {"layer", "kv_group", "head", "intermediate", "hidden"}
    for name, value in expected.items():
        assert abs(value - finals[name]) <= 0.05, (name, value, finals[name])
    plan = PruningPlan.load(tiny_run)
    assert plan.target_shape() == TargetShape.from_mapping(cfg.pruning.target, model.config)
    recorded = {entry["structure"]: entry["expected_fraction"] for entry in plan.metadata["mask_convergence"]}
    assert recorded == pytest.approx(expected)


def test_a_run_stopped_before_the_masks_converge_says_so(sample_corpus, tmp_path):
    result = train(f"data.path={sample_corpus}", f"save_folder={tmp_path}", "max_duration=3ba", "save_interval=3ba",
                   "eval_interval=100ba")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the masks had not reached the target shape when pruning ended: layer at" in result.stderr
    assert PruningPlan.load(tmp_path).metadata["mask_convergence"][0]["cut_while_open"] > 0


def test_tiny_run_writes_plot_tokenizer_free_outputs(tiny_run):
    png = tiny_run / "mask_sizes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tiny_run / "ep0-ba75-rank0.pt").exists() and (tiny_run / "ep0-ba150-rank0.pt").exists()


def test_pruned_checkpoint_exports_a_sliced_model_equal_to_the_masked_one(tiny_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-m", "llmshearing.convert", "composer-to-hf",
                             str(tiny_run / "latest-rank0.pt"), str(out), "--prune"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "had not reached the target shape" not in result.stderr  # the tiny run converges
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (hf.config.hidden_size, hf.config.num_hidden_layers, hf.config.intermediate_size) == (32, 3, 40)
    assert (hf.config.num_attention_heads, hf.config.num_key_value_heads) == (2, 1)
    assert masked_vs_exported(tiny_run / "latest-rank0.pt", hf) <= 1e-4


@torch.no_grad()
def masked_vs_exported(checkpoint: Path, hf) -> float:
    """Largest logit difference between the checkpoint's masked model (eval masks) and its export."""
    llama, l0_state = load_composer_model(checkpoint)
    model = ComposerLlama.wrapping(llama)
    model.l0 = rebuild_l0_module(model.config, l0_state)
    tokens = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    return (model.eval()({"input_ids": tokens}) - hf(tokens).logits).abs().max().item()


def as_json(values):
    return json.loads(json.dumps(values))


def test_every_checkpoint_carries_the_plan_of_its_step_and_export_slices_with_it(tiny_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from llmshearing.checkpoint_plan import PLAN_STATE_KEY
    from llmshearing.convert.cli import main as convert_main

    stored = {}
    for checkpoint in ("ep0-ba75-rank0.pt", "ep0-ba150-rank0.pt"):
        model, l0_state = load_composer_model(tiny_run / checkpoint)
        stored[checkpoint] = l0_state["_extra_state"][PLAN_STATE_KEY]
        assert stored[checkpoint] == rebuild_l0_module(model.config, l0_state).make_plan().to_dict(), checkpoint
    assert stored["ep0-ba75-rank0.pt"] != stored["ep0-ba150-rank0.pt"]  # each step's own plan

    out = tmp_path / "hf"
    assert convert_main(["composer-to-hf", str(tiny_run / "ep0-ba75-rank0.pt"), str(out), "--prune"]) == 0, \
        capsys.readouterr().err
    assert as_json(PruningPlan.load(out).to_dict()) == as_json(stored["ep0-ba75-rank0.pt"])
    assert masked_vs_exported(tiny_run / "ep0-ba75-rank0.pt", AutoModelForCausalLM.from_pretrained(out).eval()) <= 1e-4


@pytest.mark.parametrize("overrides, message", [
    (["pruning.target.hidden_size=4096"], "larger than the source"),
    (["pruning.target.num_attention_heads=3", "pruning.target.num_key_value_heads=2"], "not divisible"),
    (["pruning.mask_lrr=1.0"], "did you mean 'pruning.mask_lr'"),
    (["model.path=/nonexistent/model"], "/nonexistent/model"),
    (["data.path=/nonexistent/corpus"], "/nonexistent/corpus"),
    (["data.domains=[prose,poetry]"], "poetry"),
])
def test_bad_input_fails_before_training_with_one_line(sample_corpus, overrides, message):
    result = train(f"data.path={sample_corpus}", *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    line = last_error_line(result)
    assert line.startswith("error: ") and message in line, line
    assert "Traceback" not in result.stderr


def test_checkpoint_of_another_shape_is_rejected(sample_corpus, tiny_run):
    result = train(f"data.path={sample_corpus}", f"load_path={tiny_run / 'latest-rank0.pt'}",
                   "load_weights_only=true", "model.config.hidden_size=60")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "another shape" in last_error_line(result)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(sample_corpus, tmp_path):
    from llmshearing.convert import read_composer_checkpoint

    # the warm-up keeps step 1 at lr 0; from step 2 on the absurd learning rate blows the weights up
    result = train(f"data.path={sample_corpus}", f"save_folder={tmp_path}", "optimizer.lr=1e20",
                   "scheduler.name=linear", "scheduler.t_warmup=3ba", "save_interval=1ba", "max_duration=6ba")
    assert result.returncode == 3, result.stderr[-2000:]
    line = last_error_line(result)
    match = re.search(r"loss is (nan|inf|-inf) at step (\d+);.*last good checkpoint: (\S+)\)", line)
    assert match, line
    step = int(match.group(2))
    assert step >= 3 and match.group(3).endswith(f"ep0-ba{step - 2}-rank0.pt")
    # the checkpoint holding the weights that gave the bad loss is set aside, not deleted
    assert (tmp_path / f"ep0-ba{step - 1}-rank0.pt.nonfinite").exists()
    latest = tmp_path / "latest-rank0.pt"
    assert latest.resolve().name == f"ep0-ba{step - 2}-rank0.pt"
    state = read_composer_checkpoint(latest)
    floats = [v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert floats and all(torch.isfinite(v).all() for v in floats)
