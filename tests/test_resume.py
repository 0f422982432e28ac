"""Exact resume: a pruning run with dynamic batch loading stopped at step k (also by SIGKILL) and
restarted with ``load_path`` or ``autoresume`` ends bit-identical to the uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmshearing.sheared.noise import NoiseStream
from tests.helpers import tiny_config
from tests.test_dynamic_loading import TINY, domains, record_run, refs, run_train  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
# pruning + dynamic loading scored on the eval splits with sampled masks, an update every 3 steps
# (the resume starts mid-window), a Composer evaluation (deterministic masks) in between
PRUNING_RUN = ["dynamic_loading.update_interval=3", "eval_interval=3ba", "console_log_interval=100ba"]
STEPS = ["max_duration=8ba", "save_interval=4ba"]  # stopped (or killed) after the step-4 checkpoint
# parts of a Trainer checkpoint that hold no training state, or name the run's own files
NOT_TRAINING_STATE = {"integrations", "metadata", "run_name"}
NOT_TRAINING_CALLBACKS = {"CheckpointSaver", "ConsoleLogger", "RecordBatches"}  # the last: record_run's


def pruning_run(corpus, domains, *overrides):
    return [f"data.path={corpus}", *PRUNING_RUN, f"dynamic_loading.reference_losses={refs(domains, 9.0, prose=1.0)}",
            *overrides]


def training_state(checkpoint: Path) -> dict:
    """Everything in a Trainer checkpoint that must be equal after an exact resume."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]
    state = {key: value for key, value in state.items() if key not in NOT_TRAINING_STATE}
    state["callbacks"] = {k: v for k, v in state["callbacks"].items() if k not in NOT_TRAINING_CALLBACKS}
    state["timestamp"] = {k: v for k, v in state["timestamp"]["Timestamp"].items() if not k.endswith("wct")}
    state["algorithms"] = [name for name, _ in state["algorithms"]]  # their state is a repr with an address
    return state


def assert_identical(a, b, where="state"):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{index}]")
    else:
        assert a == b, (where, a, b)


# --- the noise stream --------------------------------------------------------------------------------

def _l0(seed=0):
    from llmshearing.shape import TargetShape
    from llmshearing.sheared import L0Module

    config = tiny_config()
    target = TargetShape.from_mapping(dict(hidden_size=30, intermediate_size=20), config)
    return L0Module(config, target, init_mean=0.0, seed=seed)  # gates at 0: samples far from 0 and 1


def test_mask_samples_come_from_the_modules_own_checkpointed_stream():
    l0 = _l0(seed=5)
    start = l0.state_dict()
    torch.manual_seed(0)
    expected_global = torch.rand(3)
    torch.manual_seed(0)
    first = [l0.sample_masks()["hidden_z"] for _ in range(3)]
    assert torch.equal(torch.rand(3), expected_global)  # sampling leaves the global RNG alone
    assert not torch.equal(first[0], first[1])
    restored = _l0(seed=99)
    restored.load_state_dict(start)
    assert torch.equal(restored.sample_masks()["hidden_z"], first[0])
    restored.load_state_dict(l0.state_dict())  # after 3 draws: the 4th
    assert torch.equal(restored.sample_masks()["hidden_z"], l0.sample_masks()["hidden_z"])


def test_a_preserved_block_leaves_the_stream_where_it_was():
    stream = NoiseStream(3)
    stream.next_generator("cpu")
    with stream.preserved():
        stream.restart(7)
        stream.next_generator("cpu")
    assert stream.state_dict() == {"seed": 3, "draws": 1}


# --- whole runs through train.py --------------------------------------------------------------------

@pytest.fixture(scope="module")
def whole_run(sample_corpus, domains, tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    record = record_run(folder / "record.json", *pruning_run(sample_corpus, domains, *STEPS, f"save_folder={folder}"))
    return folder, record


@pytest.mark.parametrize("how", ["load_path", "autoresume"])
def test_resume_at_half_way_ends_bit_identical(sample_corpus, domains, whole_run, tmp_path, how):
    whole, expected = whole_run
    folder = tmp_path / "resumed"
    if how == "load_path":
        resume = [f"load_path={whole / 'ep0-ba4-rank0.pt'}"]
    else:  # a run that was stopped after its step-4 checkpoint
        folder.mkdir()
        (folder / "ep0-ba4-rank0.pt").write_bytes((whole / "ep0-ba4-rank0.pt").read_bytes())
        (folder / "latest-rank0.pt").symlink_to("ep0-ba4-rank0.pt")
        resume = ["autoresume=true"]
    resumed = record_run(tmp_path / "record.json",
                         *pruning_run(sample_corpus, domains, *STEPS, f"save_folder={folder}", *resume))
    assert [step for step, _ in resumed["batches"]] == [5, 6, 7, 8]
    assert resumed["batches"] == expected["batches"][4:]
    for key in ("loss", "params", "weights"):
        assert resumed[key] == expected[key], key
    assert_identical(training_state(folder / "ep0-ba8-rank0.pt"), training_state(whole / "ep0-ba8-rank0.pt"))


def test_sigkill_after_a_checkpoint_then_autoresume_matches_the_uninterrupted_run(sample_corpus, domains,
                                                                                  whole_run, tmp_path):
    whole, _ = whole_run
    run = pruning_run(sample_corpus, domains, *STEPS)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), str(TINY), *run, f"save_folder={killed}"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = killed / "latest-rank0.pt"
    while process.poll() is None and not latest.exists():
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert os.readlink(latest) == "ep0-ba4-rank0.pt" and not (killed / "ep0-ba8-rank0.pt").exists()
    result = run_train(*run, f"save_folder={killed}", "autoresume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_identical(training_state(killed / "ep0-ba8-rank0.pt"), training_state(whole / "ep0-ba8-rank0.pt"))
