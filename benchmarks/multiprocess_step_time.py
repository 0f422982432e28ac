"""Training step time: `composer -n N` vs one process, same yaml and global batch (docs/BENCHMARKS.md).

    python benchmarks/multiprocess_step_time.py CONFIG.yaml [--processes 2] [--steps 10] [--skip 2] [key=value ...]

Runs tests/multiprocess_probe.py (train.py plus per-step wall times) once in one process and once
under Composer's launcher, and prints the median step time of each (the first ``--skip`` steps
excluded: warm-up, DDP bucket building) and the largest loss difference between the two runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.multiprocess_probe import launch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--threads-per-process", type=int, default=None,
                        help="OMP_NUM_THREADS of the multi-process run (default: torch's choice)")
    args, overrides = parser.parse_known_args()
    overrides = [f"max_duration={args.steps}ba", "eval_interval=100000ba", "save_folder=null",
                 "console_log_interval=100000ba", *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        (single,) = launch(Path(tmp) / "one", args.config, overrides, 1)
        env = {"OMP_NUM_THREADS": str(args.threads_per_process)} if args.threads_per_process else None
        multi = launch(Path(tmp) / "many", args.config, overrides, args.processes, env)[0]
    one = statistics.median(single["step_seconds"][args.skip:])
    many = statistics.median(multi["step_seconds"][args.skip:])
    gap = max(abs(a["loss/train/total"] - b["loss/train/total"]) for a, b in zip(single["losses"], multi["losses"]))
    print(f"1 process: {one:.3f} s/step   {args.processes} processes: {many:.3f} s/step   "
          f"ratio {many / one:.2f}   max |loss difference| {gap:.2e}")


if __name__ == "__main__":
    main()
