"""The rows of docs/BENCHMARKS.md's throughput table from benchmarks/throughput.py's JSON lines.

    python benchmarks/gpu/table.py throughput.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = ("| date | device, torch | run (seq, batch/GPU, dtype) | step | tokens/s/GPU | MFU | peak memory |\n"
          "|---|---|---|---|---|---|---|")


def row(record: dict) -> str:
    setting = f"`{record['run']}` (seq {record['seq_len']}, {record['batch_per_gpu']}/GPU, {record['dtype']}, {record['layers']} layers)"
    machine = f"{record['device']}, torch {record['torch']}"
    if "skipped" in record:
        return f"| {record['date']} | {machine} | {setting} | skipped: {record['skipped']} | | | |"
    mfu = "—" if record["mfu"] is None else f"{100 * record['mfu']:.1f} %"
    memory = "—" if record["peak_memory_gb"] is None else f"{record['peak_memory_gb']:.1f} GiB"
    return (f"| {record['date']} | {machine} | {setting} | {record['step_s']:.3f} s | "
            f"{record['tokens_per_s_per_gpu']:,.0f} | {mfu} | {memory} |")


def table(lines) -> str:
    records = [json.loads(line) for line in lines if line.strip()]
    return "\n".join([HEADER, *(row(record) for record in records)])


def main(argv) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.is_file():
        print(f"error: no throughput results at {path}", file=sys.stderr)
        return 1
    print(table(path.read_text(encoding="utf-8").splitlines()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
