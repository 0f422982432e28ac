"""pruning.per_rank_masks on two CPU ranks (gloo, DDP): each rank samples its own L0 masks, or all the same.

The file is also the probe the test launches on every rank:

    composer -n 2 tests/test_l0_ranks.py OUT_DIR CONFIG.yaml [key=value ...]

writes OUT_DIR/rank<r>.json: {"masks": a digest of the masks this rank sampled at each training
step, "losses": the logged losses of each step, "l0": a digest of this rank's final log_alpha and λ}.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "yamls" / "tiny_prune.yaml"
CPU_RANKS = {"OMP_NUM_THREADS": "1"}  # two ranks on two cores: one thread each
SHORT = ["max_duration=3ba", "eval_interval=100ba", "console_log_interval=100ba", "save_folder=null"]


def digest(tensors) -> str:
    sha = hashlib.sha1()
    for tensor in tensors:
        sha.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def probe(out: str, yaml: str, *overrides: str) -> None:
    from composer.core import Callback
    from composer.utils import dist

    from llmshearing.composer.distributed import composer_model
    from llmshearing.config import load_config
    from llmshearing.training import build_trainer

    masks, losses = [], []

    class RecordLosses(Callback):
        def batch_end(self, state, logger) -> None:
            losses.append({k: float(v) for k, v in state.total_loss_dict.items()})

    def record_masks(module, inputs, output) -> None:
        if module.training:
            masks.append(digest(output[name] for name in sorted(output)))

    trainer = build_trainer(load_config(yaml, list(overrides)))
    trainer.state.callbacks.append(RecordLosses())
    l0 = composer_model(trainer.state).l0
    l0.register_forward_hook(record_masks)
    trainer.fit()
    record = {"masks": masks, "losses": losses, "l0": digest(p for _, p in sorted(l0.named_parameters()))}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{dist.get_global_rank()}.json").write_text(json.dumps(record))
    trainer.close()


def launch(out: Path, overrides) -> list:
    command = [str(Path(sys.executable).parent / "composer"), "-n", "2", __file__, str(out), str(TINY), *overrides]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, **CPU_RANKS})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_each_rank_samples_its_own_masks_only_with_per_rank_masks(sample_corpus, tmp_path):
    overrides = [f"data.path={sample_corpus}", *SHORT]
    shared = launch(tmp_path / "shared", overrides)
    own = launch(tmp_path / "own", [*overrides, "pruning.per_rank_masks=true"])
    for run in (shared, own):
        assert [len(rank["masks"]) for rank in run] == [3, 3] and len(run[0]["losses"]) == 3
        assert all(value == value for step in run[0]["losses"] for value in step.values())  # no NaN
        assert run[0]["l0"] == run[1]["l0"]  # DDP still keeps log_alpha and λ identical on the ranks
    assert shared[0]["masks"] == shared[1]["masks"]
    assert all(a != b for a, b in zip(own[0]["masks"], own[1]["masks"]))
    # rank 0 keeps the shared stream: the same first sample (later ones differ with log_alpha)
    assert own[0]["masks"][0] == shared[0]["masks"][0]


if __name__ == "__main__":
    probe(*sys.argv[1:])
