"""benchmarks/throughput.py: the FLOPs formula, and a CPU run of every configuration with tiny shapes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmshearing.model import LlamaConfig
from tests.helpers import load_benchmark_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"




def test_flops_per_token_of_llama2_7b():
    bench = load_benchmark_script("throughput")
    config = LlamaConfig(**bench.SHAPES["llama2-7b"])
    assert bench.matmul_parameters(config) == 6_607_077_376  # 6.74B minus the 131M input embedding and norms
    assert bench.flops_per_token(config, 4096) == pytest.approx(6 * 6_607_077_376 + 12 * 32 * 32 * 128 * 4096)
    # the paper's 1,844 tokens/s/GPU on an A100 (312 TFLOP/s) while pruning the 7B model
    assert 1844 * bench.flops_per_token(config, 4096) / 312e12 == pytest.approx(0.272, abs=0.001)


def test_peak_table_matches_device_names():
    bench = load_benchmark_script("throughput")
    lookup = dict(bench.PEAK_TFLOPS)
    first = [next(v for f, v in bench.PEAK_TFLOPS if f in name) for name in
             ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", "NVIDIA H200")]
    assert first == [lookup["H100"], lookup["H100 PCIe"], lookup["A100"], lookup["H200"]]


def test_cpu_run_with_tiny_shapes(tmp_path):
    out = tmp_path / "throughput.jsonl"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--seq-len", "32", "--steps", "1", "--warmup", "0",
         "--peak-tflops", "1.0", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 * 2 * 2  # (prune, cpt) x (sdpa-flash, flash-attn) x checkpointing (off, on)
    measured = [r for r in records if "skipped" not in r]
    assert {(r["mode"], r["activation_checkpointing"]) for r in measured} == {
        ("prune", False), ("prune", True), ("cpt", False), ("cpt", True)}
    for r in measured:
        assert r["tokens_per_s_per_gpu"] > 0 and r["fsdp"] and r["dtype"] == "bf16"
        assert r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 1.0, rel=1e-2)
    assert all("flash-attn" in r["skipped"] for r in records if "skipped" in r)
