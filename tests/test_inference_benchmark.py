"""benchmarks/inference.py: exported models (uniform and per-layer) and named shapes run through
plain `transformers` generation on the CPU, with tiny sizes."""
from __future__ import annotations

import json
import math

import pytest
import torch

from llmshearing.convert.export import export_hf
from llmshearing.surgeon.semi_structured import two_zeros_in_every_four
from tests.helpers import load_benchmark_script, tiny_model

SMALL = ["--device", "cpu", "--prompt-len", "8", "--new-tokens", "3", "--repeats", "1"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark_script("inference")


def test_exports_and_shapes_are_timed_and_compared_to_the_first(bench, tmp_path):
    uniform = tiny_model(seed=1)
    per_layer = tiny_model(seed=2, intermediate_sizes=[9, 20, 37], num_attention_heads_per_layer=[6, 4, 2],
                           num_key_value_heads_per_layer=[2, 2, 2])
    export_hf(uniform, tmp_path / "uniform")
    export_hf(per_layer, tmp_path / "per_layer")
    out, table = tmp_path / "rows.jsonl", tmp_path / "table.md"

    rows = bench.main([f"source={tmp_path / 'uniform'}", str(tmp_path / "per_layer"), "shape:tiny-target",
                       "shape:tiny-source:2:4", *SMALL, "--out", str(out), "--markdown", str(table)])

    assert [r.model for r in rows] == ["source", "per_layer", "tiny-target", "tiny-source:2:4"]
    assert rows[0].parameters == sum(p.numel() for p in uniform.parameters())
    assert rows[1].parameters == sum(p.numel() for p in per_layer.parameters())
    assert math.isclose(rows[0].memory_gb, 4 * rows[0].parameters / 1e9, rel_tol=0.01)  # fp32 weights (+ RoPE buffer)
    for row in rows:
        assert row.prefill_tokens_per_s > 0 and row.decode_tokens_per_s > 0 and row.memory_gb > 0
        assert math.isclose(row.decode_tokens_per_s, 1000 / row.decode_ms_per_step)  # batch 1
        assert not row.semi_structured
    assert rows[0].prefill_speedup == rows[0].decode_speedup == 1.0
    assert math.isclose(rows[2].decode_speedup, rows[2].decode_tokens_per_s / rows[0].decode_tokens_per_s)
    assert [json.loads(line)["model"] for line in out.read_text().splitlines()] == [r.model for r in rows]
    body = table.read_text().splitlines()
    assert sum(line.startswith("| ") and "---" not in line for line in body) == 1 + len(rows)
    assert "prompt 8 tokens, 3 new tokens" in body[-1]


def test_two_four_shape_has_two_zeros_in_every_four_inputs(bench):
    spec = bench.ModelSpec.parse("shape:tiny-source:2:4")
    assert spec.shape_name == "tiny-source"
    model = bench.load_model(spec, torch.float32, torch.device("cpu"))
    assert bench.is_two_four(model)
    weight = model.model.layers[0].mlp.down_proj.weight
    assert two_zeros_in_every_four(weight) and (weight == 0).float().mean() == 0.5
    dense = bench.load_model(bench.ModelSpec.parse("shape:tiny-source"), torch.float32, torch.device("cpu"))
    assert not bench.is_two_four(dense)


def test_bad_models_and_options_fail_with_one_message(bench, tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown shape 'llama9'.*known: .*sheared-2.7b"):
        bench.main(["shape:llama9", *SMALL])
    with pytest.raises(SystemExit, match="no model at"):
        bench.main([str(tmp_path / "missing"), *SMALL])
    with pytest.raises(SystemExit):
        bench.main(["shape:tiny", "--device", "cpu", "--semi-structured"])
    assert "--semi-structured needs --device cuda" in capsys.readouterr().err


@pytest.mark.gpu
def test_semi_structured_two_four_generates_on_gpu(bench):
    rows = bench.main(["shape:smollm2-half", "shape:smollm2-half:2:4", "--device", "cuda", "--dtype", "bf16",
                       "--semi-structured", "--prompt-len", "64", "--new-tokens", "8", "--repeats", "2"])
    assert [r.semi_structured for r in rows] == [False, True]
    assert all(r.decode_tokens_per_s > 0 for r in rows)


def test_a_failing_model_is_reported_and_the_others_still_measured(bench, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    out, table = tmp_path / "rows.jsonl", tmp_path / "table.md"
    rows = bench.main([str(broken), "shape:tiny-target", *SMALL, "--out", str(out), "--markdown", str(table)])
    assert [r.model for r in rows] == ["tiny-target"] and rows[0].decode_speedup == 1.0
    failure = json.loads(out.read_text().splitlines()[-1])
    assert failure["model"] == "broken" and failure["error"].startswith("OSError: ") and "not a valid JSON" in failure["error"]
    assert table.read_text().rstrip().splitlines()[-1].startswith("broken: failed (OSError: ")
    with pytest.raises(SystemExit, match="no model could be measured"):
        bench.main([str(broken), *SMALL])
