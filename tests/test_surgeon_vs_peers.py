"""benchmarks/surgeon_vs_peers.py and benchmarks/peers/prune_peer.py: the pure helpers (no model download,
no peer library: the peers' commands, the densities and parameter counts that make rows comparable, and
which peer each row is judged against)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import load_benchmark_script, tiny_model

bench = load_benchmark_script("surgeon_vs_peers")


def load_peer_script():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "prune_peer.py"
    spec = importlib.util.spec_from_file_location("prune_peer_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_peer_commands_ask_for_the_same_sparsity_and_structure():
    dense, calib, out = Path("D"), Path("c.pt"), Path("O")
    unstructured = bench.peer_command("py", bench.RUNS_BY_NAME["sparsegpt-unstructured-0.5"], dense, calib, out)
    two_four = bench.peer_command("py", bench.RUNS_BY_NAME["wanda-2:4"], dense, calib, out)
    assert unstructured[unstructured.index("--method") + 1] == "sparsegpt"
    assert unstructured[unstructured.index("--sparsity") + 1] == "0.5"
    assert unstructured[unstructured.index("--mask") + 1] == "0:0"
    assert two_four[two_four.index("--method") + 1] == "wanda" and two_four[two_four.index("--mask") + 1] == "2:4"
    taylor = bench.RUNS_BY_NAME["taylor-structured-0.8"]
    with pytest.raises(ValueError):
        bench.peer_command("py", taylor, dense, calib, out)
    command = bench.peer_command("py", taylor, dense, calib, out, target_params=1234)
    assert command[command.index("--target-params") + 1] == "1234" and "--sparsity" not in command
    # every Taylor run matches a surgeon run that comes before it, at its density
    names = [r.name for r in bench.RUNS]
    for run in bench.RUNS:
        if run.method == "taylor":
            surgeon = bench.RUNS_BY_NAME[run.peer_of]
            assert names.index(surgeon.name) < names.index(run.name)
            assert surgeon.method == "surgeon" and surgeon.density == run.density and surgeon.mode == run.mode


def test_projection_density_counts_zeros_and_what_slicing_removed():
    model = tiny_model()
    total = bench.projection_weights(model)
    assert bench.projection_density(model) == 1.0
    kept = 0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.split(".")[-2] in bench.PROJECTIONS:
                parameter.fill_(1.0)
                parameter.view(-1)[: parameter.numel() // 2] = 0  # (about) half of every projection
                kept += parameter.numel() - parameter.numel() // 2
    assert bench.projection_density(model) == pytest.approx(kept / total) and 0.45 < kept / total <= 0.55
    # against a source twice as large (as after slicing), the same nonzeros count half as much
    assert bench.projection_density(model, 2 * total) == pytest.approx(kept / total / 2)
    # embeddings and norms are not projections
    assert total < model.num_parameters()


def test_taylor_removes_as_many_mlp_neurons_as_the_parameter_count_asks():
    peer = load_peer_script()
    model = tiny_model()
    config = model.config
    per_neuron = 3 * config.hidden_size * config.num_hidden_layers
    dense = model.num_parameters()
    assert peer.mlp_neurons_to_remove(config, dense, dense - 5 * per_neuron) == 5
    assert peer.mlp_neurons_to_remove(config, dense, dense - 5 * per_neuron - per_neuron // 3) == 5
    assert peer.mlp_neurons_to_remove(config, dense, dense + 10) == 0
    assert peer.mlp_neurons_to_remove(config, dense, 0) == config.intermediate_size - 1


def row(name, method, mode, density, all_ppl):
    return {"name": name, "method": method, "mode": mode, "target_density": density, "projection_density": density,
            "parameters": 1e6, "perplexity": {"a": all_ppl, "all": all_ppl}, "seconds": 1.0, "peak_rss_mb": 1024.0}


def test_rows_are_judged_against_the_peer_of_their_mode_and_density():
    rows = [row("dense", "dense", "dense", 1.0, 10.0),
            row("sg-u", "sparsegpt", "unstructured", 0.5, 20.0),
            row("sg-24", "sparsegpt", "2:4", 0.5, 40.0),
            row("s-24", "surgeon", "2:4", 0.5, 30.0),
            row("t-08", "taylor", "structured", 0.8, 50.0),
            row("s-06", "surgeon", "structured", 0.6, 60.0),
            row("s-08", "surgeon", "structured", 0.8, 25.0)]
    assert bench.reference_row(rows[3], rows)["name"] == "sg-24"
    assert bench.reference_row(rows[6], rows)["name"] == "t-08"
    assert bench.reference_row(rows[5], rows) is None  # no Taylor row at 0.6
    assert bench.reference_row(rows[1], rows) is None and bench.reference_row(rows[0], rows) is None
    lines = bench.table(rows, ["a", "all"]).splitlines()
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:]}
    head = lines[0].split(" | ")
    by_dense, by_peer = head.index("× dense"), head.index("× peer")
    assert cells["s-24"][by_dense] == "3.00×" and cells["s-24"][by_peer] == "0.75×"
    assert cells["s-08"][by_peer] == "0.50×" and cells["s-06"][by_peer] == "–"


def test_last_json_line_skips_the_logging_around_it():
    text = 'loading...\n{"not": "last"}\nINFO done\n{"seconds": 2.5, "peak_rss_mb": 9}\n\n'
    assert bench.last_json_line(text) == {"seconds": 2.5, "peak_rss_mb": 9}
    with pytest.raises(ValueError):
        bench.last_json_line("no json here")
