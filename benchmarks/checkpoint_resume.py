"""Checkpoint size / save time and resume overhead of a train.py run (issue 9).

    python benchmarks/checkpoint_resume.py --yaml yamls/demo_smollm2_prune.yaml --out /tmp/ckpt_bench

Runs the yaml twice in fresh processes: (1) from the start for 2 steps with a checkpoint after each,
(2) resumed from the step-1 checkpoint (``load_path``). For each: seconds from process start to the
end of its first step, seconds per step; for (1) every checkpoint write (torch.save + fsync +
rename) with its size. Then the checkpoint's bytes by section and the time of the CRC check a
resume does first. Prints one JSON object.
"""
from __future__ import annotations

import time

PROCESS_START = time.time()  # before the heavy imports, which are part of the start-up cost

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

RUN = ["max_duration=2ba", "save_interval=1ba", "eval_interval=1000ba", "save_num_checkpoints_to_keep=-1",
       "save_overwrite=true", "console_log_interval=1ba"]


def child(out: str, yaml: str, overrides) -> None:
    """One timed train.py run: first-step time since the parent started it, step times, writes."""
    from composer.core import Callback
    from composer.utils import checkpoint as composer_checkpoint

    from llmshearing.composer.checkpointing import install_atomic_checkpoint_writes
    from llmshearing.config import load_config
    from llmshearing.training import build_trainer

    started = float(os.environ.get("BENCH_STARTED", PROCESS_START))
    writes, step_ends = [], []
    install_atomic_checkpoint_writes()
    atomic_write = composer_checkpoint._write_checkpoint_file

    def timed_write(state_dict, filename):
        begin = time.perf_counter()
        atomic_write(state_dict, filename)
        writes.append({"file": os.path.basename(filename), "bytes": os.path.getsize(filename),
                       "seconds": time.perf_counter() - begin})

    timed_write.atomic = True
    composer_checkpoint._write_checkpoint_file = timed_write

    class StepTimes(Callback):
        def batch_end(self, state, logger) -> None:
            step_ends.append((int(state.timestamp.batch), time.time()))

    trainer = build_trainer(load_config(yaml, overrides))
    trainer.state.callbacks.append(StepTimes())
    trainer.fit()
    steps = [b - a for (_, a), (_, b) in zip(step_ends, step_ends[1:])]
    Path(out).write_text(json.dumps({
        "first_step": step_ends[0][0], "start_to_first_step_s": step_ends[0][1] - started,
        "step_s": steps, "writes": writes,
    }))


def timed_run(out: Path, yaml: str, *overrides: str) -> dict:
    env = dict(os.environ, BENCH_STARTED=repr(time.time()))
    result = subprocess.run([sys.executable, __file__, "--child", str(out), yaml, *overrides],
                            env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(out.read_text())


def section_bytes(checkpoint: Path) -> dict:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]

    def tensor_bytes(value, seen) -> int:
        if torch.is_tensor(value):
            key = value.untyped_storage().data_ptr()
            if key in seen:  # a tied weight is stored once
                return 0
            seen.add(key)
            return value.untyped_storage().nbytes()
        if isinstance(value, dict):
            return sum(tensor_bytes(v, seen) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(tensor_bytes(v, seen) for v in value)
        return 0

    seen: set = set()
    return {key: tensor_bytes(value, seen) for key, value in state.items() if tensor_bytes(value, set())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yaml", default="yamls/demo_smollm2_prune.yaml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/checkpoint_bench"))
    args, extra = parser.parse_known_args()
    from llmshearing.checkpoint_files import verify_checkpoint_file

    args.out.mkdir(parents=True, exist_ok=True)
    fresh = timed_run(args.out / "fresh.json", args.yaml, *RUN, *extra, f"save_folder={args.out / 'fresh'}")
    checkpoint = args.out / "fresh" / "ep0-ba1-rank0.pt"
    resumed = timed_run(args.out / "resumed.json", args.yaml, *RUN, *extra, f"save_folder={args.out / 'resumed'}",
                        f"load_path={checkpoint}")
    begin = time.perf_counter()
    verify_checkpoint_file(checkpoint)
    verify_s = time.perf_counter() - begin
    print(json.dumps({"fresh": fresh, "resumed": resumed, "checkpoint_bytes": checkpoint.stat().st_size,
                      "section_bytes": section_bytes(checkpoint), "crc_check_s": verify_s,
                      "load_avg": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        main()
