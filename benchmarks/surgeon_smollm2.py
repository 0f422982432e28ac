"""LLM Surgeon on SmolLM2-135M: per-domain eval perplexity vs the magnitude baseline, one shot vs
multi-shot, with wall time and peak memory of each pruning run.

    python benchmarks/surgeon_smollm2.py --data .cache/test_corpus                     # CPU-sized (~12 min on 2 cores)
    python benchmarks/surgeon_smollm2.py --data DIR --device cuda --calib-samples 128 --shots 8 --eval-batches 20
    python benchmarks/surgeon_smollm2.py --data /tmp/surgeon_corpus512 --targets unstructured:0.5,2:4:0.5 \
        --runs oneshot --allocations matrix,matrix-rows,global,sequential,sequential-rows \
        --calib-samples 16 --seq-len 512 --eval-samples 4            # issue 20's comparison of 2:4/unstructured rules

Every run starts from the same source weights. Runs (--runs): magnitude (F = I ⊗ I, one shot, no
weight update), surgeon one shot, surgeon multi-shot, for each pruning target in --targets; for
structured targets also surgeon one shot / multi-shot with per-layer sizes. Structured runs are
evaluated after slicing (uniform: a plain LLaMA config; per-layer: each layer its own sizes). 2:4 and
unstructured targets run once per --allocations entry (matrix, global, sequential, each optionally
with "-rows": row-scaled costs). The source's K-FAC curvature
is estimated once and reused for every first shot; its time is added to each surgeon run's time,
and a run's peak memory is the larger of its own and that estimation's, so each reads as if the run
were alone. Prints a Markdown table and writes
all figures as JSON (--json).
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import threading
import time
from pathlib import Path

import torch

from llmshearing.assets import smollm2_gguf_path
from llmshearing.convert import load_model
from llmshearing.data.calibration import calibration_batches
from llmshearing.eval import evaluate_domains
from llmshearing.surgeon.export import pruned_model
from llmshearing.surgeon.settings import SurgeonSettings
from llmshearing.surgeon.shots import layer_curvatures, run_surgeon

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARGETS = "structured:0.9,structured:0.8,structured:0.7,2:4:0.5,unstructured:0.5"
ROW_SCALED = "-rows"  # an allocation name ending so: the weight costs scaled by 1/[G⁻¹]_ii (row_scaled)
SEQUENTIAL = "sequential"  # allocation matrix with --curvature sequential (layer-by-layer input factors)
MB = 1024 ** 2


class PeakMemory:
    """Peak process RSS (CPU) or peak allocated CUDA memory above the level at start, in MB."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.running = False
            self.thread.join()
        self.megabytes = (self.peak - self.start) / MB


# run name → (scoring, multi-shot, uniform); per-layer runs apply to structured targets only
RUNS = {
    "magnitude": ("magnitude", False, True),
    "oneshot": ("curvature", False, True),
    "multishot": ("curvature", True, True),
    "oneshot-per-layer": ("curvature", False, False),
    "multishot-per-layer": ("curvature", True, False),
}


def parse_targets(text: str):
    targets = []
    for item in text.split(","):
        mode, _, density = item.strip().rpartition(":")
        targets.append((mode, float(density)))
    return targets


class SourceCurvature:
    """The unpruned model's curvature, estimated once, with what it cost."""

    def __init__(self, source, batches, args, device):
        with PeakMemory(device) as memory:
            started = time.perf_counter()
            settings = SurgeonSettings(mode="2:4", damping=args.damping, progress=False)
            self.curvatures = layer_curvatures(source, batches, range(source.config.num_hidden_layers), settings)
            self.seconds = time.perf_counter() - started
        self.megabytes = memory.megabytes


def prune_and_evaluate(source, batches, settings: SurgeonSettings, args, device, shared: SourceCurvature) -> dict:
    model = copy.deepcopy(source)
    reuse = shared if settings.scoring == "curvature" and not settings.sequential else None
    with PeakMemory(device) as memory:
        started = time.perf_counter()
        run = run_surgeon(model, batches, settings, say=lambda message: None,
                          initial_curvatures=reuse.curvatures if reuse else None)
        _, result = pruned_model(model, run, settings)
        seconds = time.perf_counter() - started
    peak = memory.megabytes
    if reuse:
        seconds += reuse.seconds
        peak = max(peak, reuse.megabytes)
    scores = evaluate_domains(result, args.data, **eval_limits(args))
    return {"mode": settings.mode, "target_density": settings.density, "scoring": settings.scoring,
            "allocation": allocation_name(settings),
            "shots": settings.shots, "uniform": settings.uniform, "density": run.shots[-1].density,
            "seconds": seconds, "peak_memory_mb": peak, "parameters": result.num_parameters(),
            "shape": layer_sizes(result.config),
            "perplexity": {domain: r.perplexity for domain, r in scores.items()}}


def allocation_settings(name: str) -> dict:
    """matrix, global, sequential, each optionally + "-rows" (row-scaled costs)."""
    base = name.removesuffix(ROW_SCALED)
    return {"allocation": "matrix" if base == SEQUENTIAL else base, "row_scaled": name.endswith(ROW_SCALED),
            "curvature": "sequential" if base == SEQUENTIAL else "kfac"}


def allocation_name(settings) -> str:
    return (SEQUENTIAL if settings.sequential else settings.allocation) + (ROW_SCALED if settings.row_scaled else "")


def needs_shared_curvature(args) -> bool:
    """A K-FAC run is asked for (structured targets always are; sparse ones unless only sequential)."""
    runs = [RUNS[name] for name in args.runs.split(",")]
    if not any(scoring == "curvature" for scoring, _, _ in runs):
        return False
    modes = {mode for mode, _ in parse_targets(args.targets)}
    return "structured" in modes or any(not a.startswith(SEQUENTIAL) for a in args.allocations.split(","))


def eval_limits(args) -> dict:
    if args.eval_samples:
        return {"batch_size": args.batch_size, "max_samples": args.eval_samples}
    return {"batch_size": args.batch_size, "max_batches": args.eval_batches}


def layer_sizes(config):
    """Query heads and MLP neurons of every layer."""
    layers = [config.layer_config(i) for i in range(config.num_hidden_layers)]
    return {"heads": [c.num_attention_heads for c in layers], "mlp": [c.intermediate_size for c in layers]}


def describe_shape(shape) -> str:
    def span(values):
        return str(values[0]) if min(values) == max(values) else f"{min(values)}–{max(values)}"
    return f" ({span(shape['heads'])} heads, {span(shape['mlp'])} MLP)"


def table(rows, domains) -> str:
    head = ["mode", "target", "method", "shots", "density", *domains, "time (s)", "peak mem (MB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        method = row.get("scoring", "-")
        method = "surgeon" if method == "curvature" else method
        method += " per-layer" if not row.get("uniform", True) else ""
        method += f", {row['allocation']}" if row["mode"] in ("2:4", "unstructured") else ""
        shape = describe_shape(row["shape"]) if row["mode"] == "structured" else ""
        cells = [row["mode"], str(row["target_density"]), method + shape, str(row["shots"]), f"{row['density']:.3f}",
                 *(f"{row['perplexity'][d]:.2f}" for d in domains), f"{row['seconds']:.0f}", f"{row['peak_memory_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO / ".cache" / "test_corpus"), help="corpus dir (sample corpus)")
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help="mode:density,... (modes: structured, 2:4, unstructured)")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shots", type=int, default=3, help="shots of the multi-shot runs")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"which runs, of {', '.join(RUNS)}")
    parser.add_argument("--damping", type=float, default=0.01)
    parser.add_argument("--eval-batches", type=int, default=1, help="eval batches per domain")
    parser.add_argument("--eval-samples", type=int, default=None, help="eval samples per domain (instead of batches)")
    parser.add_argument("--allocations", default="matrix",
                        help="2:4/unstructured allocations to compare: matrix, global, matrix-rows (matrix with "
                             "row-scaled costs), sequential (matrix with --curvature sequential), sequential-rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    source = load_model(smollm2_gguf_path()).to(device).eval()
    batches = calibration_batches(args.data, args.calib_samples, args.seq_len, args.batch_size, seed=0)
    started = time.perf_counter()
    dense = evaluate_domains(source, args.data, **eval_limits(args))
    domains = list(dense)
    rows = [{"mode": "dense", "target_density": 1.0, "scoring": "-", "shots": 0, "density": 1.0, "seconds": 0.0,
             "peak_memory_mb": 0.0, "parameters": source.num_parameters(),
             "shape": layer_sizes(source.config),
             "perplexity": {d: r.perplexity for d, r in dense.items()}}]
    shared = SourceCurvature(source, batches, args, device) if needs_shared_curvature(args) else None
    runs = [RUNS[name] for name in args.runs.split(",")]
    for mode, density in parse_targets(args.targets):
        for scoring, multi_shot, uniform in runs:
            if not uniform and mode != "structured":
                continue
            for allocation in (args.allocations.split(",") if mode != "structured" else ["global"]):
                if mode == "2:4" and not multi_shot and allocation.endswith(ROW_SCALED):
                    continue  # one 2:4 shot picks two of four weights of one row: the row's scale changes nothing
                settings = SurgeonSettings(mode=mode, density=density, scoring=scoring, uniform=uniform,
                                           shots=args.shots if multi_shot else 1, damping=args.damping, progress=False,
                                           **allocation_settings(allocation))
                rows.append(prune_and_evaluate(source, batches, settings, args, device, shared))
                print(table(rows[-1:], domains).splitlines()[-1], flush=True)
    if shared:
        print(f"\nsource curvature (shared by the first shots): {shared.seconds:.0f} s, {shared.megabytes:.0f} MB")
    print(f"{datetime.date.today()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}; total {time.perf_counter() - started:.0f} s")
    print(table(rows, domains))
    if args.json:
        shared_figures = {"seconds": shared.seconds, "peak_memory_mb": shared.megabytes} if shared else None
        Path(args.json).write_text(json.dumps({"args": vars(args), "source_curvature": shared_figures, "rows": rows},
                                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
