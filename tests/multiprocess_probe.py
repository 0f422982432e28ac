"""Test helper: a train.py run that also writes what each rank ended with.

    [composer -n N] python tests/multiprocess_probe.py OUT_DIR CONFIG.yaml [key=value ...]
    launch(out_dir, config, overrides, processes)   # the same from Python; the per-rank records

Writes OUT_DIR/rank<r>.json: {"world_size": N, "losses": loss/train/* of every step (Composer logs
the mean over ranks), "replicated": the values of the L0 masks / λ and distillation projections on
this rank, "model": sha1 of this rank's student weights, "step_seconds": wall time of each step,
"fsdp_units": FSDP-wrapped modules of the student and of the distillation teacher, "fsdp2": whether
the student's units are FSDP2 (``fully_shard``) modules, "masks": a digest of the L0 masks this rank
sampled at each training forward (empty without pruning),
"read_teacher_files": whether this rank loaded the teacher from its files (None without one)}.

    python tests/multiprocess_probe.py --runs '[{"out": ..., "config": ..., "overrides": [...], "env": {...}}, ...]'
    launch_runs(runs, processes)   # several trainings, one after another, in the same ranks

runs each training in turn in the same processes (each with its own Trainer, seed and
data loaders; ``env`` is set in os.environ while it is built and trained, e.g. FSDP_VERSION),
so several runs pay the start-up of Python, torch, Composer and the launcher once.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from composer.core import Callback
from composer.utils import dist
from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

from llmshearing.composer.distributed import composer_model
from llmshearing.config import load_config
from llmshearing.training import build_trainer

REPLICATED = ("l0", "distill_projection")
REPO = Path(__file__).resolve().parents[1]


def _run(arguments: Sequence[str], processes: int, env: Optional[dict], timeout: int = 600) -> None:
    launcher = [str(Path(sys.executable).parent / "composer"), "-n", str(processes)]
    command = [*(launcher if processes > 1 else [sys.executable]), __file__, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")


def _records(out, processes: int) -> list:
    return [json.loads((Path(out) / f"rank{rank}.json").read_text()) for rank in range(processes)]


def launch(out: Path, config, overrides: Sequence[str], processes: int, env: Optional[dict] = None) -> list:
    """Run this probe in one process, or on ``processes`` ranks under Composer's launcher (which
    picks a free port); the records of every rank."""
    _run([str(out), str(config), *overrides], processes, env)
    return _records(out, processes)


def launch_runs(runs: Sequence[dict], processes: int, env: Optional[dict] = None) -> list:
    """Several trainings one after another in one launch (one process, or ``processes`` ranks under
    Composer's launcher): runs = [{"out", "config", "overrides", "env" (optional)}]; the records of
    every rank of each run, in the order of ``runs``."""
    plan = [{"out": str(r["out"]), "config": str(r["config"]), "overrides": list(r["overrides"]),
             "env": dict(r.get("env") or {})} for r in runs]
    _run(["--runs", json.dumps(plan)], processes, env, timeout=600 + 120 * len(runs))
    return [_records(r["out"], processes) for r in plan]


class RecordSteps(Callback):
    def __init__(self) -> None:
        self.losses, self.step_seconds, self._start = [], [], 0.0

    def batch_start(self, state, logger) -> None:
        self._start = time.perf_counter()

    def batch_end(self, state, logger) -> None:
        self.step_seconds.append(time.perf_counter() - self._start)
        self.losses.append(dict(state.total_loss_dict))


def local(tensor):
    """This rank's part of a tensor (FSDP2 holds parameters as DTensors)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def replicated_values(model) -> dict:
    return {f"{child}.{name}": local(param).detach().double().cpu().flatten().tolist()
            for child in REPLICATED if getattr(model, child, None) is not None
            for name, param in getattr(model, child).named_parameters()}


def weights_digest(model) -> str:
    digest = hashlib.sha1()
    for param in model.model.parameters():
        digest.update(local(param).detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fsdp_units(module) -> int:
    """Modules sharded as one unit: FSDP1 wrappers or FSDP2 (``fully_shard``) modules."""
    return 0 if module is None else sum(isinstance(m, (FullyShardedDataParallel, FSDPModule)) for m in module.modules())


def tensors_digest(tensors) -> str:
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(out: str, yaml: str, *overrides: str) -> None:
    trainer = build_trainer(load_config(yaml, overrides))
    recorder = RecordSteps()
    trainer.state.callbacks.append(recorder)
    masks = []
    l0 = getattr(composer_model(trainer.state), "l0", None)
    if l0 is not None:  # the masks sampled in each training forward ({name: mask})
        l0.register_forward_hook(lambda module, inputs, output: masks.append(
            tensors_digest(output[name] for name in sorted(output))) if module.training else None)
    trainer.fit()
    model = composer_model(trainer.state)
    distillation = next((a for a in trainer.state.algorithms if hasattr(a, "teacher")), None)
    record = {"read_teacher_files": getattr(distillation, "read_teacher_files", None),"world_size": dist.get_world_size(), "losses": recorder.losses, "step_seconds": recorder.step_seconds,
              "replicated": replicated_values(model), "model": weights_digest(model),
              "masks": masks, "fsdp2": any(isinstance(m, FSDPModule) for m in model.model.modules()),
              "fsdp_units": {"student": fsdp_units(model.model),
                             "teacher": fsdp_units(getattr(distillation, "teacher", None))}}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{dist.get_global_rank()}.json").write_text(json.dumps(record))
    trainer.close()


def main_runs(plan: str) -> None:
    for run in json.loads(plan):
        saved = {key: os.environ.get(key) for key in run["env"]}
        os.environ.update(run["env"])
        try:
            main(run["out"], run["config"], *run["overrides"])
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        gc.collect()


if __name__ == "__main__":
    if sys.argv[1] == "--runs":
        main_runs(sys.argv[2])
    else:
        main(*sys.argv[1:])
