"""benchmarks/gpu/pack_reproduction.sh + reproduce.sh on the CPU: the real SmolLM2 GGUF and the sample
corpus packed into parts smaller than a device call carries, joined and checked, then the reproduction
run from what was unpacked (the source row only, on the CPU); a missing or damaged part stops it
with the fix named, a spent time budget before the run starts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"


def script(name: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    settings = {**os.environ, "PYTHON": sys.executable, "GPU_CARRY": str(tmp_path / "carry"),
                "GPU_REPRO_PAYLOAD": str(tmp_path / "payload"), "GPU_REPRO_OUT": str(tmp_path / "repro"),
                "OUT": str(tmp_path / "out"), "GPU_REPRO_WHEELS": "none", "GPU_CHECK_WHEELS": "none", **env}
    return subprocess.run(["bash", str(GPU / name)], capture_output=True, text=True, env=settings, cwd=REPO,
                          timeout=900)


@pytest.mark.slow
def test_pack_join_and_reproduce_the_source_row(tmp_path, sample_corpus):
    packed = script("pack_reproduction.sh", tmp_path, PART_MIB="40", GPU_REPRO_CORPUS=str(sample_corpus))
    assert packed.returncode == 0, packed.stderr[-2000:]
    parts = sorted((tmp_path / "carry").glob("part*"))
    assert [p.name for p in parts] == ["part1", "part2", "part3"]  # 98 MB GGUF + 1 MB corpus in 40 MiB pieces
    assert all(sum(f.stat().st_size for f in p.iterdir()) <= 40 * 2**20 + 200 for p in parts)
    assert 'device call 3: carry [' in packed.stdout and "bash benchmarks/gpu/reproduce.sh" in packed.stdout

    # the smallest run: SmolLM2's two evals (curve point, final row) on one 32-token sequence per domain
    run = {"GPU_REPRO_DEVICE": "cpu", "GPU_REPRO_ROWS": "source", "GPU_REPRO_TOKENS": "512",
           "GPU_REPRO_BATCH": "1", "GPU_REPRO_SEQ_LEN": "32", "GPU_REPRO_EXTRA": "--final-max-tokens 32"}
    hidden = tmp_path / "carry" / "part2.away"
    (tmp_path / "carry" / "part2").rename(hidden)
    missing = script("reproduce.sh", tmp_path, **run)
    assert missing.returncode == 2 and "missing parts" in missing.stdout and "part2 of 3" in missing.stdout
    hidden.rename(tmp_path / "carry" / "part2")

    result = script("reproduce.sh", tmp_path, **run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert (tmp_path / "payload" / "source.gguf").stat().st_size > 90e6
    row = json.loads((tmp_path / "out" / "rows" / "source.json").read_text())
    assert row["eval"]["all"]["loss"] > 0 and set(row["eval"]["domains"]) == set(json.loads((sample_corpus / "manifest.json").read_text())["domains"])
    assert "source model (no training)" in (tmp_path / "out" / "results.md").read_text()

    spent = script("reproduce.sh", tmp_path, **run, GPU_REPRO_SECONDS="20")  # the payload is unpacked already
    assert spent.returncode == 124 and "no time left for the reproduction" in spent.stdout

    piece = next((tmp_path / "carry" / "part1").glob("payload.tar.*"))
    data = bytearray(piece.read_bytes())
    data[1000] ^= 0xFF
    piece.write_bytes(bytes(data))
    (tmp_path / "payload" / ".sha256").unlink()  # as on a fresh machine: join again
    damaged = script("reproduce.sh", tmp_path, **run)
    assert damaged.returncode == 2 and "a part is stale or damaged" in damaged.stdout
