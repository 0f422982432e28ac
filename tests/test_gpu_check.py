"""benchmarks/gpu/check.sh, the one-call GPU check, run on the CPU with tiny shapes (GPU_CHECK_SMOKE=1):
every stage runs (throughput, gpu tests, mask overhead, inference), writes its file and records its exit code; a short budget skips stages and still
writes the summary; table.py turns the throughput lines into the BENCHMARKS.md rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))

from table import table  # noqa: E402


def check(out: Path, **env) -> subprocess.CompletedProcess:
    settings = {**os.environ, "OUT": str(out), "GPU_CHECK_SMOKE": "1", "GPU_CHECK_WHEELS": "none",
                "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "check.sh")], capture_output=True, text=True,
                          env=settings, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_check_runs_every_stage_and_writes_its_files(tmp_path):
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    stages = (tmp_path / "stages.txt").read_text().splitlines()
    assert [line.rsplit(": ", 1)[0] for line in stages] == [
        "throughput cpt:tiny-target", "throughput prune:tiny-source", "gpu tests", "mask overhead",
        "inference batch 1"]
    assert all(" rc=0 " in line for line in stages), stages
    records = [json.loads(line) for line in (tmp_path / "throughput.jsonl").read_text().splitlines()]
    measured = [r for r in records if "skipped" not in r]
    assert {(r["mode"], r["activation_checkpointing"]) for r in measured} == \
        {("cpt", False), ("cpt", True), ("prune", False), ("prune", True)}
    assert all(r["tokens_per_s_per_gpu"] > 0 for r in measured)
    rows = (tmp_path / "throughput.md").read_text().splitlines()
    assert len(rows) == 2 + len(records)
    masks = json.loads((tmp_path / "mask_overhead.jsonl").read_text().splitlines()[-1])
    assert masks["masked_step_s"] > 0 and masks["unmasked_step_s"] > 0
    inference = [json.loads(line) for line in (tmp_path / "inference_b1.jsonl").read_text().splitlines()]
    assert [r["model"] for r in inference] == ["tiny", "tiny-target"] and inference[1]["decode_tokens_per_s"] > 0
    assert "| tiny-target |" in (tmp_path / "inference_b1.md").read_text()
    assert "torch" in (tmp_path / "env.txt").read_text()


def test_a_spent_budget_skips_the_stages_and_still_reports(tmp_path):
    result = check(tmp_path, GPU_CHECK_SECONDS="5")
    assert result.returncode == 0, result.stderr[-2000:]
    stages = (tmp_path / "stages.txt").read_text().splitlines()
    assert len(stages) == 5 and all(line.endswith("skipped (no time left)") for line in stages), stages
    assert "error: no throughput results" in (tmp_path / "throughput.md").read_text()


def test_missing_wheels_stop_the_check_with_the_fix(tmp_path):
    result = check(tmp_path, GPU_CHECK_WHEELS=str(tmp_path / "no_wheels"))
    assert result.returncode == 1
    assert "fetch_wheels.sh" in result.stdout


def test_table_rows_give_mfu_in_percent_and_skips_with_their_reason():
    record = {"run": "cpt:sheared-2.7b sdpa-flash ckpt=off", "seq_len": 4096, "batch_per_gpu": 1, "dtype": "bf16",
              "layers": 32, "device": "NVIDIA H200", "torch": "2.11.0", "date": "2026-12-01", "step_s": 0.5,
              "tokens_per_s_per_gpu": 8192.0, "mfu": 0.4512, "peak_memory_gb": 61.25}
    skipped = {**{k: record[k] for k in ("run", "seq_len", "batch_per_gpu", "dtype", "layers", "device", "torch", "date")},
               "skipped": "out of memory"}
    lines = table([json.dumps(record), "", json.dumps(skipped)]).splitlines()
    assert lines[2].endswith("| 0.500 s | 8,192 | 45.1 % | 61.2 GiB |")
    assert "skipped: out of memory" in lines[3] and len(lines) == 4
