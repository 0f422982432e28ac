"""Loss-head memory and step time: the whole-logits loss (``model.loss_chunk_tokens: 0``, what every
run did before) against the chunked head (model/loss_head.py), side by side, for one training step
(forward, loss, backward, AdamW step) of a tiny model, so that the head dominates.

    python benchmarks/loss_head_memory.py --out loss_head.json                 # CPU, the docs' table
    python benchmarks/loss_head_memory.py --device cuda --dtype bf16 --out gpu.json

Cases: vocabularies 49,152 (SmolLM2), 128,256 (Llama-3) and 151,936 (Qwen), one sequence of 2,048
and of 8,192 tokens, (a) the LM loss and (b) distillation from a teacher (alpha 0.5, T 1: both
terms), each ``before`` and ``after``, plus ``body``: the same step with a head that returns the
hidden states and a dummy loss, whose memory is subtracted to give the loss head's own.

Each (loss, vocabulary, sequence) group runs in a process of its own: one model and optimizer (Adam's
state already made), the three paths' steps measured in turn, ``--repeats`` times, interleaved so that
a busy machine slows every path alike (step time: the median). On a CPU a step's memory is the peak
resident set during it (VmHWM reset just before) above the resident set before it, with glibc handing
every allocation over 4 MiB back to the system when it is freed, so no step's buffers hide in the
next one's; on a GPU, torch's peak allocated bytes above the allocated bytes before the step. The
before path of a group whose memory, extrapolated linearly from the shorter sequence, would pass
``--max-gb`` is not run (the table says so). Two sequence lengths give each path's memory as fixed +
per-token x tokens (a before path with one run: through zero, its memory being nearly all per token),
hence the tokens (and sequences) of the largest micro-batch within ``--budget-gb``.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
VOCABS = (49_152, 128_256, 151_936)
SEQS = (2048, 8192)
MODES = ("lm", "kd")
PATHS = ("before", "after", "body")
STUDENT = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=64, tie_word_embeddings=False)
TEACHER = dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=6,
               num_key_value_heads=2, head_dim=64, tie_word_embeddings=False)
KD_ALPHA, KD_TEMPERATURE = 0.5, 1.0
GIB = 2 ** 30


# --- one group, in its own process ----------------------------------------------------------------

def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class _HostMemory:
    def before(self) -> int:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        return _status_kib("VmRSS") * 1024

    def peak(self) -> int:
        return _status_kib("VmHWM") * 1024


class _GpuMemory:
    def __init__(self, torch):
        self.torch = torch

    def before(self) -> int:
        gc.collect()
        self.torch.cuda.synchronize()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated()

    def peak(self) -> int:
        self.torch.cuda.synchronize()
        return self.torch.cuda.max_memory_allocated()


def _training_step(path: str, model, teacher, optimizer, batch) -> None:
    """The step a Composer run takes on this path, through the same model and algorithm code."""
    import torch

    from llmshearing.composer.distillation import Distillation

    if path == "body":
        def hidden_only(hidden, weight):
            return hidden

        loss = model.model(batch["input_ids"], head=hidden_only).float().square().mean()
        if teacher is not None:
            with torch.no_grad():
                teacher(batch["input_ids"], head=hidden_only)
    else:
        outputs = model(batch)
        loss = model.loss(outputs, batch)
        if teacher is not None:
            algorithm = Distillation(teacher, temperature=KD_TEMPERATURE, alpha=KD_ALPHA)
            algorithm.teacher = teacher
            loss = algorithm._distillation_loss(SimpleNamespace(batch=batch, outputs=outputs, loss=loss))["total"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _use_path(path: str, model, teacher, chunk_tokens: int) -> None:
    from llmshearing.composer.distillation import Distillation

    model.loss_chunk_tokens = chunk_tokens if path == "after" else 0
    model.distillation_head = None
    if teacher is not None and path == "after":
        algorithm = Distillation(teacher, temperature=KD_TEMPERATURE, alpha=KD_ALPHA)
        algorithm.teacher = teacher
        model.distillation_head = algorithm.student_head


def run_group(group: dict) -> list:
    """One (loss, vocabulary, sequence) group: one model and optimizer, the paths measured in turn."""
    import torch

    from llmshearing.model import LlamaConfig, LlamaForCausalLM
    from llmshearing.model.composer_model import ComposerLlama

    device = torch.device(group["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[group["dtype"]]
    torch.manual_seed(0)
    student = dict(STUDENT, hidden_size=group["hidden"])
    model = ComposerLlama(LlamaConfig(vocab_size=group["vocab"], **student)).to(device=device, dtype=dtype).train()
    teacher = None
    if group["mode"] == "kd":
        teacher = LlamaForCausalLM(LlamaConfig(vocab_size=group["vocab"], **TEACHER)).to(device=device, dtype=dtype)
        teacher.requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    for param in model.parameters():  # Adam's state exists before the measured steps, as in any step but the first
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, group["vocab"], (group["batch"], group["seq"]), generator=generator)
    batch = {"input_ids": ids.to(device)}
    memory = _GpuMemory(torch) if device.type == "cuda" else _HostMemory()
    measured = {path: {"times": [], "peaks": []} for path in group["paths"]}
    for _ in range(group["repeats"]):
        for path in group["paths"]:  # interleaved, so that a busy machine slows every path alike
            _use_path(path, model, teacher, group["chunk_tokens"])
            resident = memory.before()
            start = time.perf_counter()
            _training_step(path, model, teacher, optimizer, batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            measured[path]["times"].append(time.perf_counter() - start)
            # the kernel's RSS counters lag by a few hundred KiB: a step that allocates less reads as 0
            measured[path]["peaks"].append(max(0, memory.peak() - resident))
            measured[path]["resident_bytes"] = resident
    case = {k: v for k, v in group.items() if k not in ("paths", "repeats")}
    return [{**case, "path": path, "step_s": statistics.median(m["times"]), "step_times_s": m["times"],
             "step_peak_bytes": max(m["peaks"]), "resident_bytes": m["resident_bytes"]}
            for path, m in measured.items()]


# --- the driver ----------------------------------------------------------------------------------

def _child(group: dict, timeout: float) -> list:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(4 * 2 ** 20), PYTHONPATH=str(REPO))
    try:
        result = subprocess.run([sys.executable, __file__, "--group", json.dumps(group)], capture_output=True,
                                text=True, env=env, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [{**group, "path": path, "error": f"over --group-timeout {timeout:g} s"} for path in group["paths"]]
    if result.returncode != 0:
        error = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        return [{**group, "path": path, "error": error} for path in group["paths"]]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _fit(points):
    """(fixed, per_token) bytes through the two longest runs; through zero from a single run (the
    whole-logits path, whose memory is nearly all per token: an upper bound on its per-token cost)."""
    if len(points) == 1:
        (tokens, memory), = points
        return 0.0, memory / tokens
    (t1, m1), (t2, m2) = sorted(points)[-2:]
    per_token = (m2 - m1) / (t2 - t1)
    return m2 - per_token * t2, per_token


def summarise(results: list, budget_gb: float, seqs) -> dict:
    measured = {(r["mode"], r["vocab"], r["seq"], r["path"]): r for r in results if "step_peak_bytes" in r}
    not_measured = {(r["mode"], r["vocab"], r["seq"], r["path"]): r.get("skipped") or r.get("error")
                    for r in results if "step_peak_bytes" not in r}
    rows, budgets = [], []
    for mode in MODES:
        for vocab in sorted({r["vocab"] for r in results}):
            for seq in seqs:
                before, after, body = (measured.get((mode, vocab, seq, p)) for p in PATHS)
                if after is None:
                    continue
                row = {"mode": mode, "vocab": vocab, "seq": seq, "tokens": after["batch"] * seq,
                       "body_step_gib": None if body is None else body["step_peak_bytes"] / GIB}
                for name, case in (("before", before), ("after", after)):
                    row[f"{name}_step_gib"] = None if case is None else case["step_peak_bytes"] / GIB
                    row[f"{name}_head_gib"] = None if case is None or body is None else \
                        (case["step_peak_bytes"] - body["step_peak_bytes"]) / GIB
                    row[f"{name}_step_s"] = None if case is None else case["step_s"]
                if before is None:
                    row["before_not_measured"] = not_measured.get((mode, vocab, seq, "before"), "not run")
                else:
                    if body is not None:
                        row["head_memory_ratio"] = row["before_head_gib"] / max(row["after_head_gib"], 1e-9)
                    row["step_time_change"] = after["step_s"] / before["step_s"] - 1.0
                rows.append(row)
            for path in ("before", "after"):
                points = [(r["tokens"], r[f"{path}_step_gib"] * GIB) for r in rows
                          if r["mode"] == mode and r["vocab"] == vocab and r.get(f"{path}_step_gib") is not None]
                if not points or (len(points) < 2 and path == "after"):
                    continue
                fixed, per_token = _fit(points)
                # below the measurement's resolution (tiny runs): no figure rather than an absurd one
                tokens = int((budget_gb * GIB - fixed) / per_token) if per_token > 0 else None
                budgets.append({"mode": mode, "vocab": vocab, "path": path, "runs_fitted": len(points),
                                "fixed_gib": fixed / GIB,
                                "per_token_kib": per_token / 1024, "tokens_in_budget": tokens,
                                **{f"sequences_of_{s}": None if tokens is None else max(0, tokens // s)
                                   for s in seqs}})
    return {"rows": rows, "budget_gb": budget_gb, "budget": budgets}


def _number(value, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def table(summary: dict) -> str:
    lines = ["| loss | vocab | seq | step GiB before | step GiB after | head GiB before | head GiB after | "
             "head memory before/after | step s before | step s after | step time |", "|" + "---|" * 11]
    for r in summary["rows"]:
        lines.append(" | ".join([
            f"| {r['mode']}", str(r["vocab"]), str(r["seq"]), _number(r["before_step_gib"], "{:.2f}"),
            _number(r["after_step_gib"], "{:.2f}"), _number(r["before_head_gib"], "{:.2f}"),
            _number(r["after_head_gib"], "{:.2f}"), _number(r.get("head_memory_ratio"), "{:.1f}x"),
            _number(r["before_step_s"], "{:.2f}"), _number(r["after_step_s"], "{:.2f}"),
            _number(r.get("step_time_change"), "{:+.1%}")]) + " |")
    seq_columns = sorted(int(key.rsplit("_", 1)[1]) for b in summary["budget"][:1] for key in b
                         if key.startswith("sequences_of_"))
    header = ["loss", "vocab", "path", "runs fitted", "fixed GiB", "KiB per token",
              f"tokens in {summary['budget_gb']:g} GiB"] + [f"sequences of {s}" for s in seq_columns]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for b in summary["budget"]:
        counts = [_number(b["tokens_in_budget"], "{}")] + [_number(b[f"sequences_of_{s}"], "{}") for s in seq_columns]
        lines.append(f"| {b['mode']} | {b['vocab']} | {b['path']} | {b['runs_fitted']} | {b['fixed_gib']:.2f} | "
                     f"{b['per_token_kib']:.1f} | "
                     + " | ".join(counts) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocabs", type=int, nargs="+", default=list(VOCABS))
    parser.add_argument("--seqs", type=int, nargs="+", default=list(SEQS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch", type=int, default=1, help="sequences per micro-batch")
    parser.add_argument("--chunk-tokens", type=int, default=None, help="default: the config default")
    parser.add_argument("--repeats", type=int, default=3, help="measured steps per case (after a warm-up)")
    parser.add_argument("--long-repeats", type=int, default=1, help="measured steps of cases over 4096 tokens")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--max-gb", type=float, default=8.0, help="do not run a case expected to need more")
    parser.add_argument("--budget-gb", type=float, default=16.0, help="memory budget of the micro-batch figure")
    parser.add_argument("--group-timeout", type=float, default=1800.0)
    parser.add_argument("--hidden", type=int, default=STUDENT["hidden_size"], help="the student's hidden size")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.group:
        print(json.dumps(run_group(json.loads(args.group))))
        return {}
    from llmshearing.model.loss_head import DEFAULT_CHUNK_TOKENS

    chunk = args.chunk_tokens or DEFAULT_CHUNK_TOKENS
    seqs = sorted(args.seqs)
    results, started, load = [], time.perf_counter(), [os.getloadavg()]
    for seq in seqs:
        for mode in args.modes:
            for vocab in args.vocabs:
                group = dict(mode=mode, vocab=vocab, seq=seq, batch=args.batch, chunk_tokens=chunk,
                             hidden=args.hidden, device=args.device, dtype=args.dtype,
                             repeats=args.repeats if args.batch * seq <= 4096 else args.long_repeats,
                             paths=list(PATHS))
                expected = _expected_bytes(results, group)
                if expected is not None and expected > args.max_gb * GIB:
                    group["paths"] = ["body", "after"]
                    results.append({**group, "path": "before",
                                    "skipped": f"not run: about {expected / GIB:.1f} GiB expected, over --max-gb"})
                for result in _child(group, args.group_timeout):
                    results.append(result)
                    print(json.dumps({k: result.get(k) for k in ("mode", "vocab", "seq", "path", "step_s",
                                                                 "step_peak_bytes", "error")}), flush=True)
                load.append(os.getloadavg())
    summary = summarise(results, args.budget_gb, seqs)
    report = {
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/loss_head_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "nproc": os.cpu_count(),
                    "python": platform.python_version(), "device": args.device, "dtype": args.dtype,
                    "load_average_1min_during_run": [round(x[0], 1) for x in load]},
        "student": dict(STUDENT, hidden_size=args.hidden), "teacher": TEACHER,
        "distillation": {"alpha": KD_ALPHA, "temperature": KD_TEMPERATURE}, "chunk_tokens": chunk,
        "wall_s": time.perf_counter() - started,
        "cases": results, **summary,
    }
    print(table(summary))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    return report


def _expected_bytes(results: list, group: dict):
    """The before path's memory from the same loss and vocabulary at the longest shorter sequence
    (linear in tokens)."""
    shorter = [r for r in results if "step_peak_bytes" in r and r["path"] == "before" and r["mode"] == group["mode"]
               and r["vocab"] == group["vocab"] and r["seq"] < group["seq"]]
    if not shorter:
        return None
    longest = max(shorter, key=lambda r: r["seq"])
    return longest["step_peak_bytes"] * group["seq"] / longest["seq"]


if __name__ == "__main__":
    main()
