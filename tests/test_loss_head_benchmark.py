"""benchmarks/loss_head_memory.py in a tiny setting: every group runs in its own process, before,
after and body are measured side by side, and the JSON and tables come out (no timing thresholds)."""
from __future__ import annotations

import json

from tests.helpers import load_benchmark_script


def test_benchmark_measures_both_paths_and_writes_its_report(tmp_path, capsys):
    bench = load_benchmark_script("loss_head_memory")
    out = tmp_path / "loss_head.json"

    returned = bench.main(["--vocabs", "512", "--seqs", "16", "32", "--hidden", "32", "--repeats", "1",
                           "--chunk-tokens", "8", "--budget-gb", "1", "--out", str(out)])

    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))
    assert {"date", "command", "machine", "student", "teacher", "chunk_tokens", "cases", "rows",
            "budget"} <= set(report)
    assert report["chunk_tokens"] == 8 and report["student"]["hidden_size"] == 32
    cases = {(c["mode"], c["seq"], c["path"]): c for c in report["cases"]}
    assert set(cases) == {(mode, seq, path) for mode in ("lm", "kd") for seq in (16, 32)
                          for path in ("before", "after", "body")}
    assert all(c["step_peak_bytes"] >= 0 and c["step_s"] > 0 and "error" not in c for c in cases.values())
    assert [(r["mode"], r["seq"]) for r in report["rows"]] == [("lm", 16), ("lm", 32), ("kd", 16), ("kd", 32)]
    assert all(r["before_step_s"] > 0 and r["after_step_s"] > 0 for r in report["rows"])
    assert {(b["mode"], b["path"]) for b in report["budget"]} == {(m, p) for m in ("lm", "kd")
                                                                 for p in ("before", "after")}
    printed = capsys.readouterr().out
    assert "| loss | vocab | seq |" in printed and "tokens in 1 GiB" in printed


def test_a_before_path_expected_over_the_memory_cap_is_not_run():
    bench = load_benchmark_script("loss_head_memory")
    shorter = {"mode": "lm", "vocab": 512, "seq": 2048, "path": "before", "step_peak_bytes": 3 * 2 ** 30}
    group = {"mode": "lm", "vocab": 512, "seq": 8192}
    assert bench._expected_bytes([shorter], group) == 12 * 2 ** 30
    assert bench._expected_bytes([shorter], dict(group, vocab=1024)) is None
    summary = bench.summarise([
        {**group, "batch": 1, "path": "after", "step_s": 1.0, "step_peak_bytes": 2 ** 30},
        {**group, "batch": 1, "path": "before", "skipped": "not run: about 12.0 GiB expected, over --max-gb"},
    ], budget_gb=16, seqs=[8192])
    (row,) = summary["rows"]
    assert row["before_step_gib"] is None and row["before_not_measured"].startswith("not run")
    assert "| lm | 512 | 8192 | — | 1.00 |" in bench.table(summary)
