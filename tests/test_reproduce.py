"""benchmarks/reproduce.py: every row end to end at a tiny budget (a tiny source model, in-process)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import pytest
import torch

from llmshearing.assets import load_tokenizer
from llmshearing.convert import export_hf
from llmshearing.model import LlamaConfig, LlamaForCausalLM
from tests.helpers import load_benchmark_script

TARGET = "hidden_size=64,num_attention_heads=2,num_key_value_heads=2,num_hidden_layers=2,intermediate_size=64"


def test_curves_are_read_from_the_file_logger(tmp_path):
    log = tmp_path / "metrics.txt"
    log.write_text("[metric][batch=4]: metrics/eval/code/LanguageCrossEntropy: 3.5000 \n"
                   "[metric][batch=4]: metrics/eval/all/LanguageCrossEntropy: 3.2500 \n"
                   "[metric][batch=4]: loss/train/total: 9.0000 \n"
                   "[metric][batch=8]: metrics/eval/code/LanguageCrossEntropy: 3.0000 \n")
    assert load_benchmark_script("reproduce").read_curve(log, tokens_per_step=512) == [
        (2048, {"code": 3.5, "all": 3.25}), (4096, {"code": 3.0})]


def test_the_table_date_spans_rows_kept_from_an_earlier_run(tmp_path):
    reproduce = load_benchmark_script("reproduce")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"seconds": 1.0}))  # a row saved before rows recorded their date
    os.utime(old, (1_700_000_000, 1_700_000_000))
    kept = reproduce.saved_row(old)
    assert kept["finished"] == "2023-11-14 22:13 UTC"
    new = {"finished": "2026-11-25 07:00 UTC"}
    assert reproduce.run_dates([kept, new], "2026-11-25 06:00 UTC") == (
        "rows finished 2023-11-14 22:13 UTC to 2026-11-25 07:00 UTC")
    assert reproduce.run_dates([new, dict(new)], "2026-11-25 06:00 UTC") == "2026-11-25 07:00 UTC"
    assert reproduce.run_dates([], "2026-11-25 06:00 UTC") == "2026-11-25 06:00 UTC"


@pytest.mark.slow
def test_every_row_at_a_tiny_budget(sample_corpus, tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    source = export_hf(LlamaForCausalLM(config), tmp_path / "source", tokenizer=load_tokenizer())
    out = tmp_path / "repro"
    reproduce = load_benchmark_script("reproduce")
    code = reproduce.main([
        "--in-process", "--budget-tokens", "512", "--out", str(out), "--source", str(source), "--data", str(sample_corpus),
        "--seq-len", "32", "--batch", "2", "--calib-samples", "8", "--evals-per-stage", "2", "--final-max-tokens", "64",
        "--target", TARGET, "--eta", "0.5"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert not results["failures"] and set(results["rows"]) == {
        "sheared_dynamic", "sheared_static", "sheared_kd_warm", "sheared_kd_warm_static", "minitron_kd", "surgeon_cpt",
        "scratch", "source"}
    trained = {name: row for name, row in results["rows"].items() if name != "source"}
    assert {row["training_tokens"] for row in trained.values()} == {512}
    assert {row["shape"] for row in trained.values()} == {"64/2h/2kv/2L/64"}
    for row in trained.values():
        assert row["curve"] and row["curve"][-1][0] == 512  # the last eval at the end of the budget
        assert set(row["eval"]["domains"]) == {"prose", "encyclopedia", "code", "technical", "mail"}
    table = (out / "results.md").read_text()
    assert table.startswith("Budget: 512 training tokens per row") and "Machine:" in table and "Date:" in table
    assert "dynamic loading η = 0.5" in table.splitlines()[0]
    for stage in ("sheared_dynamic_prune", "sheared_dynamic_cpt", "surgeon_cpt"):  # the step size reaches the runs
        assert "dynamic_loading.eta=0.5" in (out / "logs" / f"{stage}.train.log").read_text().splitlines()[0]
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert [line.split(" | ")[0] for line in body] == [f"| {reproduce.ROW_TITLES[r]}" for r in reproduce.DEFAULT_ROWS]
    assert (out / "eval_loss_vs_tokens.png").stat().st_size > 10_000
    assert not list((out / "work").rglob("*.pt"))  # every stage's checkpoint went with its export


def test_a_stage_checkpoint_is_removed_after_its_export_unless_kept(tmp_path, sample_corpus):
    reproduce = load_benchmark_script("reproduce")
    commands = []  # whether the checkpoint was there when its export ran
    for keep in (False, True):
        settings, _ = reproduce.parse_args(["--budget-tokens", "512", "--out", str(tmp_path), "--data", str(sample_corpus),
                                            "--device", "cpu", *(["--keep-checkpoints"] if keep else [])])
        checkpoint = tmp_path / "work" / "cpt" / "latest-rank0.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"state")
        stages = reproduce.Stages(settings, lambda name, argv: commands.append(Path(argv[-2]).exists()))
        assert stages.export("cpt", checkpoint) == tmp_path / "work" / "cpt_hf"
        assert checkpoint.exists() == keep
    assert commands == [True, True]  # the export read the checkpoint before it went


def test_every_stage_runs_on_the_device_asked_for(tmp_path, sample_corpus):
    reproduce = load_benchmark_script("reproduce")
    cpu, _ = reproduce.parse_args(["--budget-tokens", "512", "--out", str(tmp_path), "--data", str(sample_corpus),
                                   "--device", "cpu"])
    commands = []
    stages = reproduce.Stages(dataclasses.replace(cpu, device="gpu"), lambda name, argv: commands.append(argv))
    stages.train("cpt", "demo_smollm2_cpt.yaml", 4, [])
    stages.reference_losses()
    train, reference = ([str(a) for a in command] for command in commands)
    assert train[-2:] == ["device=gpu", "precision=amp_bf16"]  # after the yaml's own cpu / fp32
    assert reference[-2:] == ["--device", "cuda"]
    assert cpu.training_device == ["device=cpu", "precision=fp32"] and cpu.cli_device == ["--device", "cpu"]


def test_the_sheared_variants_distil_in_both_stages_and_start_from_minitrons_importance(tmp_path, sample_corpus,
                                                                                       monkeypatch):
    reproduce = load_benchmark_script("reproduce")
    settings, _ = reproduce.parse_args(["--budget-tokens", "2048", "--out", str(tmp_path), "--data", str(sample_corpus),
                                        "--device", "cpu", "--calib-samples", "8"])
    commands = {}
    monkeypatch.setattr(reproduce, "read_curve", lambda log, tokens_per_step: [])
    stages = reproduce.Stages(settings, lambda name, argv: commands.setdefault(name, [str(a) for a in argv]))
    row = reproduce.sheared(stages, "dynamic", "sheared_kd_warm", kd=True, warm=True)
    importance_dir = str(tmp_path / "work" / "minitron_pruned_hf")
    assert commands["minitron.prune"][commands["minitron.prune"].index("--out") + 1] == importance_dir
    for stage in ("sheared_kd_warm_prune.train", "sheared_kd_warm_cpt.train"):
        assert f"teacher.path={settings.source}" in commands[stage] and "teacher.alpha=0.0" in commands[stage]
    assert f"pruning.warm_start={importance_dir}" in commands["sheared_kd_warm_prune.train"]
    assert not any(a.startswith("pruning.") for a in commands["sheared_kd_warm_cpt.train"])
    assert row["calibration_tokens"] == 8 * settings.seq_len
    plain = reproduce.sheared(stages, "dynamic", "sheared_dynamic")
    assert not any(a.startswith(("teacher.", "pruning.warm_start", "pruning.mask_lr", "optimizer."))
                   for a in commands["sheared_dynamic_prune.train"])  # the prune yaml's rates and lr
    assert plain["calibration_tokens"] == 0
    # --prune-lr: the L0 stage on the recovery runs' cosine schedule
    stages.s = dataclasses.replace(settings, prune_lr=3e-4, prune_overrides=("pruning.mask_lr=0.5",))
    reproduce.sheared(stages, "dynamic", "sheared_lr")
    assert commands["sheared_lr_prune.train"][-1] == "pruning.mask_lr=0.5"  # last: overrides the row's own
    assert not any(a.startswith("pruning.") for a in commands["sheared_lr_cpt.train"])
    assert stages.recovery(3e-4, settings.prune_steps)[0] == "optimizer.lr=0.0003"
    assert set(stages.recovery(3e-4, settings.prune_steps)) <= set(commands["sheared_lr_prune.train"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_without_cuda_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no CUDA device"):
        load_benchmark_script("reproduce").parse_args(["--budget-tokens", "512", "--out", str(tmp_path), "--device", "gpu"])


def test_the_l0_stage_report_finds_the_step_the_masks_reached_the_target(tmp_path):
    reproduce = load_benchmark_script("reproduce")
    log = tmp_path / "prune.metrics.txt"
    lines = []
    steps = [(1.0, 1.0, 1.0), (0.6, 0.8, 0.7), (0.33, 0.5, 0.5), (0.31, 0.34, 0.3)]  # head, neurons, target
    for batch, (head, neurons, target) in enumerate(steps, start=1):
        lines += [f"[metric][batch={batch}]: pruning/expected_fraction/head: {head}",
                  f"[metric][batch={batch}]: pruning/target_fraction/head: {target}",
                  f"[metric][batch={batch}]: pruning/expected_fraction/intermediate: {neurons}",
                  f"[metric][batch={batch}]: pruning/target_fraction/intermediate: {target}"]
    log.write_text("\n".join(lines) + "\n")
    (tmp_path / "pruned").mkdir()
    convergence = [{"structure": "head", "cut": 3, "cut_while_open": 1}]
    (tmp_path / "pruned" / "pruning_plan.json").write_text(json.dumps({"metadata": {"mask_convergence": convergence}}))
    report = reproduce.l0_stage_report(log, tmp_path / "pruned", [(512, {"all": 4.0, "code": 3.0})])
    # the final targets are 0.3; within 0.05: head from batch 3 (0.33), neurons only from batch 4 (0.34)
    assert report["steps_to_target"] == 4
    assert report["convergence"] == convergence and report["sliced_loss"] == [(512, 4.0)]
    assert reproduce.l0_stage_report(tmp_path / "none.txt", tmp_path, [])["steps_to_target"] is None


def test_an_in_process_stage_leaves_no_logging_handler_on_its_closed_log(tmp_path, monkeypatch, capsys):
    """A stage's main that logs to stderr binds its handler to the stage's log file; the next records
    used to fail on the closed file ("--- Logging error ---" after every stage of --in-process)."""
    (tmp_path / "stage_that_logs.py").write_text(
        "import logging, sys\n"
        "def main(args):\n"
        "    logging.getLogger('stage_that_logs').addHandler(logging.StreamHandler(sys.stderr))\n"
        "    logging.getLogger('stage_that_logs').warning('inside the stage')\n"
        "    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    log = tmp_path / "stage.log"
    with log.open("w") as handle:
        assert load_benchmark_script("reproduce").Runner._call(("stage_that_logs", []), handle) == 0
    logging.getLogger("stage_that_logs").warning("after the stage")
    assert "inside the stage" in log.read_text()
    assert "Logging error" not in capsys.readouterr().err
    assert logging.getLogger("stage_that_logs").handlers == []


def test_seed_curves_put_each_seed_in_its_own_panel_with_the_final_perplexity(tmp_path):
    seed_curves = load_benchmark_script("seed_curves")
    specs = []
    for seed, shift in (("17", 0.0), ("18", 0.3)):
        for label, final in (("Minitron + KD", 4.7), ("Sheared", 4.8)):
            path = tmp_path / f"{seed}_{label[:3]}.json"
            path.write_text(json.dumps({"curve": [[0, {"all": 9.0 + shift}], [512, {"all": final + shift, "code": 1.0}]],
                                        "eval": {"all": {"loss": final + shift}}}))
            specs.append(f"{path}:{seed}:{label}")
    panels = seed_curves.read_lines(specs)
    assert list(panels) == ["17", "18"]
    label, points, perplexity = panels["18"][1]
    assert (label, points) == ("Sheared", [(0, 9.3), (512, pytest.approx(5.1))])
    assert perplexity == pytest.approx(math.exp(5.1))
    out = tmp_path / "curves.png"
    assert seed_curves.main([*specs, "--out", str(out), "--ymax", "8"]) == 0
    assert out.stat().st_size > 10_000
