"""The demo's command sequence (llmshearing/cli/demo.py); its steps are the tested CLIs themselves."""
from __future__ import annotations

import pytest

from llmshearing.cli import demo as demo_cli


def demo_commands(monkeypatch, tmp_path, *flags) -> dict:
    steps = {}
    monkeypatch.setattr(demo_cli, "run_step", lambda title, command: steps.setdefault(title, [str(c) for c in command]))
    assert demo_cli.main(["--out", str(tmp_path), *flags]) == 0
    return steps


def train_commands(steps: dict) -> list:
    return [command for command in steps.values() if "train" in command]


def test_the_default_demo_is_the_paper_s_method_cold_start_without_a_teacher(monkeypatch, tmp_path):
    steps = demo_commands(monkeypatch, tmp_path)
    assert not any("minitron" in command for command in steps.values())
    for command in train_commands(steps):
        assert not any(arg.startswith(("pruning.warm_start", "teacher.")) for arg in command)


@pytest.mark.parametrize("flags", [("--warm-start",), ("--distil",), ("--warm-start", "--distil")])
def test_warm_start_and_distillation_reach_the_stages_they_belong_to(monkeypatch, tmp_path, flags):
    steps = demo_commands(monkeypatch, tmp_path, *flags)
    titles = list(steps)
    prune, cpt = train_commands(steps)
    calibration = [command for command in steps.values() if "minitron" in command]
    if "--warm-start" in flags:
        [minitron] = calibration
        out = minitron[minitron.index("--out") + 1]
        assert minitron[minitron.index("--target") + 1] == (
            "hidden_size=384,num_attention_heads=6,num_key_value_heads=3,num_hidden_layers=24,intermediate_size=1024")
        assert f"pruning.warm_start={out}" in prune and not any(a.startswith("pruning.") for a in cpt)
        assert titles.index(next(t for t, c in steps.items() if c is minitron)) < titles.index(
            next(t for t, c in steps.items() if c is prune))  # the importance exists before pruning starts
    else:
        assert not calibration
    for command in (prune, cpt):
        assert ("teacher.path=smollm2" in command and "teacher.alpha=0.0" in command) == ("--distil" in flags)
