"""Miniature reproduction of the papers' claims: every method, one target shape, one token budget.

    python benchmarks/reproduce.py --budget-tokens 12288 --prune-fraction 0.5 --in-process --out repro_out   # CPU, ~16 min
    python benchmarks/reproduce.py --budget-tokens 102400 --prune-fraction 0.5 --in-process --out repro_100k  # CPU, ~1.5 h (docs/RESULTS.md)
    python benchmarks/reproduce.py --budget-tokens 5000000 --batch 64 --seq-len 512 --data CORPUS512 --out repro_gpu   # GPU, bf16

From the source (SmolLM2-135M by default) to the same target shape, each row spending the same
number of training tokens (``--budget-tokens``; forward-only or curvature calibration passes are
listed separately, they are not training):

1. ``sheared_dynamic``: L0 pruning (``--prune-fraction`` of the budget) + continued pre-training,
   both with dynamic batch loading (reference losses = the source's own per-domain loss)
2. ``sheared_static``: the same with static (fixed, uniform) loading
   Variants of row 1 (issue 16): ``sheared_kd`` distils from the source in both stages (the
   ``teacher:`` section of minitron_kd_smollm2.yaml: logit KL, α = 0), ``sheared_warm`` starts the
   masks from Minitron's importance (``pruning.warm_start``, the same ``prune minitron`` calibration
   as row 3), ``sheared_kd_warm`` both, ``sheared_kd_warm_static`` both with static loading; the last two
   run by default
3. ``minitron_kd``: activation-importance pruning + knowledge distillation from the source
4. ``surgeon_cpt``: LLM Surgeon structured to the target shape (``--target``) + continued
   pre-training (dynamic loading, as row 1's second stage)
5. ``scratch``: the target architecture from random initialisation (static loading)
6. ``source``: the source model itself (no training)

Every stage is the project's own command (train.py with the repo's yamls and dot-list overrides,
``python -m llmshearing.prune minitron|surgeon``, ``python -m llmshearing.convert``,
``python -m llmshearing.eval``), run as a subprocess with its log in OUT/logs/. Writes OUT/results.json,
OUT/results.md (the table) and OUT/eval_loss_vs_tokens.png, updated after every row; ``--resume``
skips rows whose OUT/rows/<row>.json exists; ``--in-process`` runs the stages' mains in this process.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SHEARED_VARIANTS = ("sheared_kd", "sheared_warm", "sheared_kd_warm", "sheared_kd_warm_static")
ROWS = ("sheared_dynamic", "sheared_static", *SHEARED_VARIANTS, "minitron_kd", "surgeon_cpt", "scratch", "source")
# the learned method as the paper runs it (rows 1, 2) and at its best here (warm start + KD, issue 16);
# the other variants run when asked for
DEFAULT_ROWS = tuple(row for row in ROWS if row not in ("sheared_kd", "sheared_warm"))
# the source first (every other row's reference), then the cheapest comparison, so that a run cut
# short still answers "pruned and recovered vs from scratch"
RUN_ORDER = ("source", "scratch", "sheared_dynamic", "sheared_static", "minitron_kd", *SHEARED_VARIANTS, "surgeon_cpt")
ROW_TITLES = {
    "sheared_dynamic": "Sheared: L0 pruning + CPT, dynamic loading",
    "sheared_static": "Sheared: L0 pruning + CPT, static loading",
    "sheared_kd": "Sheared + KD in both stages, dynamic loading",
    "sheared_warm": "Sheared, masks warm-started from Minitron's importance, dynamic loading",
    "sheared_kd_warm": "Sheared, warm start + KD in both stages, dynamic loading",
    "sheared_kd_warm_static": "Sheared, warm start + KD in both stages, static loading",
    "minitron_kd": "Minitron: importance pruning + KD",
    "surgeon_cpt": "LLM Surgeon structured (uniform) + CPT",
    "scratch": "same architecture, random init",
    "source": "source model (no training)",
}
# SmolLM2-135M (576 / 9 heads, 3 KV / 30 layers / 1536) -> 68.2M parameters (50.7 %). Hidden size and
# depth are kept because LLM Surgeon's structured mode removes heads and neurons only; 6 heads with
# MLP 384 is the split LLM Surgeon's own global ranking picks at this size (--density 0.375).
DEFAULT_TARGET = "hidden_size=576,num_attention_heads=6,num_key_value_heads=3,num_hidden_layers=30,intermediate_size=384"
EVAL_LINE = re.compile(r"\[metric\]\[batch=(\d+)\]: metrics/eval/([^/\s]+)/LanguageCrossEntropy: (\S+)")
FRACTION_LINE = re.compile(r"\[metric\]\[batch=(\d+)\]: pruning/(expected|target)_fraction/(\w+): (\S+)")
Curve = List[Tuple[int, Dict[str, float]]]  # (training tokens, {domain or "all": loss})


@dataclasses.dataclass
class Settings:
    source: str
    data: Path
    out: Path
    budget_tokens: int
    seq_len: int
    batch: int
    prune_fraction: float
    target: Dict[str, int]
    calib_samples: int
    curve_eval_batches: int
    evals_per_stage: int
    final_max_tokens: Optional[int]
    lr: float
    scratch_lr: float
    surgeon_shots: int
    seed: int
    device: str = "cpu"  # cpu | gpu: where every stage runs (gpu: bf16 autocast in training)
    eta: float = 1.0  # dynamic loading's step size (the paper's 1.0)
    # the model's lr in the L0 stage: None = the prune yaml's (1e-4 constant, the paper's); a value =
    # the recovery runs' schedule (cosine from that peak, as CPT and Minitron's KD run)
    prune_lr: Optional[float] = None
    prune_overrides: Tuple[str, ...] = ()  # train.py dot-list overrides of every L0 stage, after the row's own
    # False: a stage's Composer checkpoint folder goes once its HF export is written (~780 MB per SmolLM2
    # stage in fp32 with the optimizer state; a few seeds' rows filled a 250 GB disk)
    keep_checkpoints: bool = False

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len

    @property
    def total_steps(self) -> int:
        return max(2, self.budget_tokens // self.tokens_per_step)

    @property
    def prune_steps(self) -> int:
        return min(self.total_steps - 1, max(1, round(self.total_steps * self.prune_fraction)))

    @property
    def training_device(self) -> List[str]:
        """train.py overrides: the demo yamls say cpu / fp32."""
        return ["device=gpu", "precision=amp_bf16"] if self.device == "gpu" else ["device=cpu", "precision=fp32"]

    @property
    def cli_device(self) -> List[str]:
        """--device of the pruning, evaluation and reference-loss commands."""
        return ["--device", "cuda" if self.device == "gpu" else "cpu"]

    @property
    def target_arg(self) -> str:
        from llmshearing.prune.cli import format_target

        return format_target(self.target)


# ---- running the project's commands ------------------------------------------------------------
# --in-process calls these mains instead of starting a Python per stage: it saves the ~10 s of
# imports each of the ~27 stages costs (the smoke test, docs/RESULTS.md); the default, one process
# per stage, isolates the stages completely.
ENTRY_POINTS = {"train.py": "llmshearing.cli.train", "llmshearing.eval": "llmshearing.eval.cli",
                "llmshearing.prune": "llmshearing.prune.cli", "llmshearing.convert": "llmshearing.convert.cli",
                "llmshearing.dynamic_loading.reference_loss": "llmshearing.dynamic_loading.reference_loss"}


def entry_point(command: List[str]) -> Optional[Tuple[str, List[str]]]:
    """(module with main(argv), argv) for a ``python -m X ...`` or ``python train.py ...`` command."""
    if command[1] == "-m" and command[2] in ENTRY_POINTS:
        return ENTRY_POINTS[command[2]], command[3:]
    if Path(command[1]).name in ENTRY_POINTS:
        return ENTRY_POINTS[Path(command[1]).name], command[2:]
    return None


class Runner:
    """Runs one command per stage, logs it to OUT/logs/<name>.log, stops the row when one fails."""

    def __init__(self, out: Path, in_process: bool = False):
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.in_process = in_process
        self.seconds: Dict[str, float] = {}

    def __call__(self, name: str, argv: List) -> Path:
        log = self.logs / f"{name}.log"
        command = [str(a) for a in argv]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command)}", flush=True)
        started = time.time()
        with log.open("w", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            entry = entry_point(command) if self.in_process else None
            code = self._call(entry, handle) if entry else subprocess.run(
                command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT).returncode
        self.seconds[name] = round(time.time() - started, 1)
        if code != 0:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
            raise RuntimeError(f"stage {name} failed (exit {code}); log {log}:\n{tail}")
        return log

    @staticmethod
    def _call(entry: Tuple[str, List[str]], handle) -> int:
        import importlib
        import traceback

        module, args = entry
        with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle), _logging_handlers_restored():
            try:
                return importlib.import_module(module).main(args) or 0
            except SystemExit as exit_:
                return exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # noqa: BLE001 - reported like a failed subprocess, with its traceback in the log
                traceback.print_exc()
                return 1


@contextlib.contextmanager
def _logging_handlers_restored():
    """Removes the logging handlers a stage's main adds: they write to the stage's log file, which is
    closed when the stage ends, and the next stage's records would fail on it ("Logging error")."""
    def loggers() -> List[logging.Logger]:
        return [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger))]

    before = {id(lg): list(lg.handlers) for lg in loggers()}
    try:
        yield
    finally:
        for lg in loggers():
            for handler in [h for h in lg.handlers if h not in before.get(id(lg), [])]:
                lg.removeHandler(handler)


class Stages:
    """The commands of every row: training runs, exports, pruning CLIs, evaluations."""

    def __init__(self, s: Settings, run: Runner):
        self.s, self.run = s, run
        self.work = s.out / "work"

    def reference_losses(self) -> Path:
        path = self.work / "reference_losses.json"
        if not path.exists():
            self.run("reference_losses", [PYTHON, "-m", "llmshearing.dynamic_loading.reference_loss", "--model", self.s.source,
                                          "--data", self.s.data, "--out", path, "--seq-len", self.s.seq_len,
                                          "--batches", self.s.curve_eval_batches, "--batch-size", self.s.batch,
                                          *self.s.cli_device])
        return path

    def evaluate(self, name: str, model, max_tokens: Optional[int]) -> dict:
        out = self.work / f"{name}.eval.json"
        argv = [PYTHON, "-m", "llmshearing.eval", model, "--data", self.s.data, "--out", out, "--seq-len", self.s.seq_len,
                *self.s.cli_device]
        argv += ["--max-tokens", max_tokens] if max_tokens else []
        self.run(f"{name}.eval", argv)
        return json.loads(out.read_text())

    def curve_point(self, name: str, model, tokens: int) -> Tuple[int, Dict[str, float]]:
        """An eval on the samples the training runs' evaluators read (their first batches per domain)."""
        evaluation = self.evaluate(name, model, self.s.curve_eval_batches * self.s.batch * self.s.seq_len)
        return tokens, {**{d: r["loss"] for d, r in evaluation["domains"].items()}, "all": evaluation["all"]["loss"]}

    def train(self, name: str, yaml: str, steps: int, overrides: List[str]) -> Tuple[Path, Curve]:
        """A train.py run of ``steps`` batches; returns its last checkpoint and its eval curve."""
        folder, log = self.work / name, self.work / f"{name}.metrics.txt"
        s = self.s
        common = [
            f"data.path={s.data}", f"data.seq_len={s.seq_len}", f"data.eval_max_batches={s.curve_eval_batches}",
            f"global_train_batch_size={s.batch}", f"device_train_microbatch_size={s.batch}",
            f"device_eval_batch_size={s.batch}", f"max_duration={steps}ba",
            f"eval_interval={max(1, steps // s.evals_per_stage)}ba", f"save_folder={folder}",
            f"save_interval={steps}ba", "save_num_checkpoints_to_keep=1", "save_overwrite=true", f"seed={s.seed}",
            f"loggers.file.filename={log}", "loggers.file.capture_stdout=false", "loggers.file.capture_stderr=false",
            f"console_log_interval={max(1, steps // 4)}ba", f"run_name=repro-{name}", *s.training_device,
        ]
        if log.exists():
            log.unlink()
        self.run(f"{name}.train", [PYTHON, REPO / "train.py", REPO / "yamls" / yaml, *common, *overrides])
        return folder / "latest-rank0.pt", read_curve(log, s.tokens_per_step)

    def export(self, name: str, checkpoint: Path, prune: bool = False) -> Path:
        out = self.work / f"{name}_hf"
        self.run(f"{name}.export", [PYTHON, "-m", "llmshearing.convert", "composer-to-hf", checkpoint, out,
                                    *(["--prune"] if prune else [])])
        if not self.s.keep_checkpoints:
            shutil.rmtree(Path(checkpoint).parent, ignore_errors=True)
        return out

    def dynamic(self, mode: str, steps: int) -> List[str]:
        return [f"dynamic_loading.mode={mode}", f"dynamic_loading.reference_losses_file={self.reference_losses()}",
                f"dynamic_loading.update_interval={max(1, steps // 8)}", f"dynamic_loading.eta={self.s.eta}",
                "dynamic_loading.loss_source=train"]  # the training batches' own losses: no extra forward passes

    def recovery(self, lr: float, steps: int) -> List[str]:
        return [f"optimizer.lr={lr}", "scheduler.name=cosine", f"scheduler.t_warmup={max(1, steps // 20)}ba",
                "scheduler.alpha_f=0.1"]

    def cpt(self, name: str, model: Path, mode: str, steps: int, extra: Tuple[str, ...] = ()) -> Tuple[Path, Curve]:
        checkpoint, curve = self.train(name, "demo_smollm2_cpt.yaml", steps,
                                       [f"model.path={model}", *self.dynamic(mode, steps), *self.recovery(self.s.lr, steps),
                                        *extra])
        return self.export(name, checkpoint), curve

    def teacher(self) -> List[str]:
        """The source as teacher, with minitron_kd_smollm2.yaml's settings (logit KL at T = 1, no LM term)."""
        return [f"teacher.path={self.s.source}", "teacher.temperature=1.0", "teacher.alpha=0.0"]

    def minitron_pruned(self) -> Path:
        """``prune minitron`` to the target: the pruned HF dir and its importance.json, made once per OUT."""
        s, pruned = self.s, self.work / "minitron_pruned_hf"
        if not (pruned / "importance.json").exists():
            self.run("minitron.prune", [PYTHON, "-m", "llmshearing.prune", "minitron", "--model", s.source,
                                        "--data", s.data, "--out", pruned, "--target", s.target_arg,
                                        "--calib-samples", s.calib_samples, "--seq-len", s.seq_len, "--seed", s.seed,
                                        *s.cli_device])
        return pruned


# ---- the rows ----------------------------------------------------------------------------------
def sheared(stages: Stages, mode: str, name: str, kd: bool = False, warm: bool = False) -> dict:
    s = stages.s
    target = [f"pruning.target.{k}={v}" for k, v in s.target.items()]
    teacher = stages.teacher() if kd else []
    warm_start = [f"pruning.warm_start={stages.minitron_pruned()}"] if warm else []
    prune_schedule = stages.recovery(s.prune_lr, s.prune_steps) if s.prune_lr else []
    checkpoint, prune_curve = stages.train(f"{name}_prune", "demo_smollm2_prune.yaml", s.prune_steps,
                                           [f"model.path={s.source}", *target, *stages.dynamic(mode, s.prune_steps),
                                            *teacher, *warm_start, *prune_schedule, *s.prune_overrides])
    pruned = stages.export(f"{name}_prune", checkpoint, prune=True)
    l0_stage = l0_stage_report(stages.work / f"{name}_prune.metrics.txt", pruned, prune_curve)
    model, cpt_curve = stages.cpt(f"{name}_cpt", pruned, mode, s.total_steps - s.prune_steps, tuple(teacher))
    offset = s.prune_steps * s.tokens_per_step
    return {"model": model, "curve": prune_curve + [(t + offset, v) for t, v in cpt_curve],
            "training_tokens": s.total_steps * s.tokens_per_step,
            "calibration_tokens": s.calib_samples * s.seq_len if warm else 0, "l0_stage": l0_stage}


def l0_stage_report(log: Path, pruned: Path, prune_curve: Curve) -> dict:
    """Where the L0 stage stands when it ends (issue 16): the first step at which every structure's
    expected size was within the convergence tolerance of its final target, the units the final cut
    removed while their gates were open, and the sliced model's eval loss at each eval of the stage
    (the deterministic masks the evaluators use slice to exactly that model)."""
    from llmshearing.plan import PLAN_FILE
    from llmshearing.sheared.convergence import DEFAULT_TOLERANCE

    fractions: Dict[int, Dict[str, Dict[str, float]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        match = FRACTION_LINE.search(line)
        if match:
            batch, kind, structure, value = match.groups()
            fractions.setdefault(int(batch), {}).setdefault(kind, {})[structure] = float(value)
    final = fractions[max(fractions)]["target"] if fractions else {}
    reached = [batch for batch, f in sorted(fractions.items())
               if f.get("expected") and all(f["expected"][k] <= final[k] + DEFAULT_TOLERANCE for k in f["expected"])]
    plan_file = pruned / PLAN_FILE
    plan = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    return {"steps_to_target": reached[0] if reached else None,
            "convergence": plan.get("metadata", {}).get("mask_convergence", []),
            "sliced_loss": [(tokens, losses.get("all")) for tokens, losses in prune_curve]}


def minitron_kd(stages: Stages) -> dict:
    s = stages.s
    pruned = stages.minitron_pruned()
    start = stages.curve_point("minitron_pruned", pruned, 0)
    checkpoint, curve = stages.train("minitron_kd", "minitron_kd_smollm2.yaml", s.total_steps,
                                     [f"model.path={pruned}", f"teacher.path={s.source}",
                                      *stages.recovery(s.lr, s.total_steps)])
    return {"model": stages.export("minitron_kd", checkpoint), "curve": [start] + curve,
            "training_tokens": s.total_steps * s.tokens_per_step, "calibration_tokens": s.calib_samples * s.seq_len}


def surgeon_cpt(stages: Stages) -> dict:
    s = stages.s
    pruned = stages.work / "surgeon_pruned_hf"
    stages.run("surgeon.prune", [PYTHON, "-m", "llmshearing.prune", "surgeon", "--model", s.source, "--data", s.data,
                                 "--out", pruned, "--mode", "structured", "--target", s.target_arg, "--shots", s.surgeon_shots,
                                 "--calib-samples", s.calib_samples, "--seq-len", s.seq_len, "--seed", s.seed,
                                 *s.cli_device])
    start = stages.curve_point("surgeon_pruned", pruned, 0)
    model, curve = stages.cpt("surgeon_cpt", pruned, "dynamic", s.total_steps)
    return {"model": model, "curve": [start] + curve, "training_tokens": s.total_steps * s.tokens_per_step,
            "calibration_tokens": s.surgeon_shots * s.calib_samples * s.seq_len}


def scratch(stages: Stages) -> dict:
    s = stages.s
    config = [f"model.config.{k}={json.dumps(v)}" for k, v in target_config(s).items() if v is not None]
    checkpoint, curve = stages.train("scratch", "demo_smollm2_cpt.yaml", s.total_steps,
                                     ["model.path=null", *config, f"tokenizer={s.source}",
                                      *stages.dynamic("static", s.total_steps), *stages.recovery(s.scratch_lr, s.total_steps)])
    return {"model": stages.export("scratch", checkpoint), "curve": curve,
            "training_tokens": s.total_steps * s.tokens_per_step, "calibration_tokens": 0}


def source(stages: Stages) -> dict:
    """No training; its curve is one point, drawn as the reference line."""
    return {"model": stages.s.source, "curve": [stages.curve_point("source_curve", stages.s.source, 0)],
            "training_tokens": 0, "calibration_tokens": 0}


BUILDERS = {"sheared_dynamic": lambda st: sheared(st, "dynamic", "sheared_dynamic"),
            "sheared_static": lambda st: sheared(st, "static", "sheared_static"),
            "sheared_kd": lambda st: sheared(st, "dynamic", "sheared_kd", kd=True),
            "sheared_warm": lambda st: sheared(st, "dynamic", "sheared_warm", warm=True),
            "sheared_kd_warm": lambda st: sheared(st, "dynamic", "sheared_kd_warm", kd=True, warm=True),
            "sheared_kd_warm_static": lambda st: sheared(st, "static", "sheared_kd_warm_static", kd=True, warm=True),
            "minitron_kd": minitron_kd, "surgeon_cpt": surgeon_cpt, "scratch": scratch, "source": source}


# ---- shapes and sources ------------------------------------------------------------------------
def resolved_source(path: str) -> str:
    from llmshearing.assets import resolve_model_path

    return resolve_model_path(path)


def source_config(s: Settings):
    from llmshearing.convert.sources import GGUF, detect_format
    from llmshearing.model.config import LlamaConfig
    from transformers import AutoConfig

    path = Path(s.source)
    if detect_format(path) == GGUF:
        return LlamaConfig.from_hf(AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name))
    if path.is_dir():
        return LlamaConfig.from_hf(AutoConfig.from_pretrained(str(path)))
    from llmshearing.convert.sources import load_model

    return load_model(path).config


def target_config(s: Settings) -> dict:
    from llmshearing.shape import TargetShape

    source = source_config(s)
    shape = TargetShape.from_mapping(s.target, source)
    shape.validate_against(source)
    return shape.config_for(source).to_dict()


# ---- curves, table, plot -----------------------------------------------------------------------
def read_curve(log: Path, tokens_per_step: int) -> Curve:
    points: Dict[int, Dict[str, float]] = {}
    for batch, domain, value in EVAL_LINE.findall(log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""):
        points.setdefault(int(batch), {})[domain] = float(value)
    return [(batch * tokens_per_step, losses) for batch, losses in sorted(points.items())]


def shape_of(config: dict) -> str:
    return (f"{config['hidden_size']}/{config['num_attention_heads']}h/{config['num_key_value_heads']}kv/"
            f"{config['num_hidden_layers']}L/{config['intermediate_size']}")


def worst_gap(row: dict, reference: dict) -> Tuple[str, float]:
    gaps = {d: r["loss"] - reference["domains"][d]["loss"] for d, r in row["eval"]["domains"].items()}
    domain = max(gaps, key=gaps.get)
    return domain, gaps[domain]


def machine(device: str) -> str:
    import torch

    if device == "gpu":
        device = torch.cuda.get_device_name()
    else:
        device = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return f"{device}, torch {torch.__version__}"


def table(rows: Dict[str, dict], s: Settings, header: dict) -> str:
    domains = list(next(iter(rows.values()))["eval"]["domains"])
    reference = rows.get("source")
    lines = [
        f"Budget: {s.budget_tokens:,} training tokens per row ({s.total_steps} steps of {s.batch} x {s.seq_len}; "
        f"Sheared: {s.prune_steps} pruning + {s.total_steps - s.prune_steps} CPT steps; dynamic loading η = {s.eta:g}). "
        f"Machine: {header['machine']}. Date: {header['date']}. Source: {s.source}.",
        "",
        "| row | shape (d/heads/kv/layers/ff) | params | train tokens | calib tokens | "
        + " | ".join(domains) + " | all | worst gap vs source | wall |",
        "|---|---|---|---|---|" + "---|" * len(domains) + "---|---|---|",
    ]
    for name, row in sorted(rows.items(), key=lambda item: ROWS.index(item[0])):
        ev = row["eval"]
        ppl = " | ".join(f"{ev['domains'][d]['perplexity']:.2f}" for d in domains)
        gap = "—"
        if reference is not None and name != "source":
            domain, value = worst_gap(row, reference["eval"])
            gap = f"{domain} +{value:.3f}"
        lines.append(f"| {ROW_TITLES[name]} | {row['shape']} | {ev['parameters'] / 1e6:.1f}M | {row['training_tokens']:,} | "
                     f"{row['calibration_tokens']:,} | {ppl} | {ev['all']['perplexity']:.2f} | {gap} | {row['seconds']:.0f} s |")
    lines += ["", "Per-domain eval perplexity (exp of the token-weighted loss, `python -m llmshearing.eval`, "
              f"{'first ' + str(s.final_max_tokens) + ' tokens' if s.final_max_tokens else 'whole eval split'} per domain); "
              "worst gap = the largest per-domain loss increase over the source model (nats)."]
    return "\n".join(lines)


def plot(rows: Dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["all"] + list(next(iter(rows.values()))["eval"]["domains"])
    fig, axes = plt.subplots(2, math.ceil(len(keys) / 2), figsize=(5 * math.ceil(len(keys) / 2), 8), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, row in rows.items():
            if name == "source":
                ax.axhline(row["curve"][0][1][key], ls="--", c="k", lw=1, label=ROW_TITLES[name])
                continue
            points = [(t, losses[key]) for t, losses in row["curve"] if key in losses]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=ROW_TITLES[name])
        ax.set_title(f"eval loss: {key}")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("loss (nats/token)")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main --------------------------------------------------------------------------------------
def utc_now(seconds: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def saved_row(path: Path) -> dict:
    """A row kept by --resume; one saved before rows recorded their date finished when its file was written."""
    row = json.loads(path.read_text())
    row.setdefault("finished", utc_now(path.stat().st_mtime))
    return row


def run_dates(rows, started: str) -> str:
    """When the rows finished: one date, or the span when some rows come from an earlier --resume run."""
    dates = sorted({row["finished"] for row in rows} or {started})
    return dates[0] if len(dates) == 1 else f"rows finished {dates[0]} to {dates[-1]}"


def run_row(name: str, stages: Stages, rows_dir: Path) -> dict:
    started = time.time()
    built = BUILDERS[name](stages)
    evaluation = stages.evaluate(name, built.pop("model"), stages.s.final_max_tokens)
    config = source_config(stages.s).to_dict() if name == "source" else json.loads((Path(evaluation["model"]) / "config.json").read_text())
    row = {**built, "eval": evaluation, "shape": shape_of(config),
           "seconds": round(time.time() - started, 1), "finished": utc_now()}
    (rows_dir / f"{name}.json").write_text(json.dumps(row, indent=1))
    return row


def parse_args(argv=None) -> Tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-tokens", type=int, required=True, help="training tokens for every row")
    parser.add_argument("--out", type=Path, default=Path("repro_out"))
    parser.add_argument("--source", default="smollm2", help="HF dir, .gguf, Composer checkpoint or 'smollm2'")
    parser.add_argument("--data", type=Path, help="corpus dir (default: OUT/corpus, built by data_prep/build_sample_corpus.py)")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="target shape in HF config words")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(DEFAULT_ROWS))
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="global batch size (sequences per step)")
    parser.add_argument("--prune-fraction", type=float, default=0.25, help="share of the Sheared budget spent pruning")
    parser.add_argument("--calib-samples", type=int, default=64, help="Minitron / LLM Surgeon calibration sequences")
    parser.add_argument("--surgeon-shots", type=int, default=1)
    parser.add_argument("--curve-eval-batches", type=int, default=1, help="eval batches per domain for the curves")
    parser.add_argument("--evals-per-stage", type=int, default=4)
    parser.add_argument("--final-max-tokens", type=int, default=4096, help="tokens per domain for the final table")
    parser.add_argument("--lr", type=float, default=2e-4, help="peak lr of every recovery run (CPT, KD)")
    parser.add_argument("--scratch-lr", type=float, default=1e-3, help="peak lr of the from-scratch run")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--eta", type=float, default=1.0, help="dynamic loading's step size (default: the paper's 1.0)")
    parser.add_argument("--prune-lr", type=float, help="the model's peak lr in the L0 stage, on the recovery runs' cosine "
                                                       "schedule (default: the prune yaml's 1e-4, constant, the paper's)")
    parser.add_argument("--prune-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="train.py overrides of every L0 stage, e.g. pruning.log_alpha_range=[-9.2,9.2]")
    parser.add_argument("--resume", action="store_true", help="keep rows already in OUT/rows/")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep every stage's Composer checkpoint (default: removed once the stage's HF export is written)")
    parser.add_argument("--in-process", action="store_true", help="run the stages' mains in this process (faster start)")
    parser.add_argument("--device", choices=("cpu", "gpu"), help="where every stage runs (default: gpu when CUDA is there)")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("gpu" if torch.cuda.is_available() else "cpu")
    if device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("error: --device gpu, but torch sees no CUDA device")
    from llmshearing.prune.cli import parse_target

    out = args.out.resolve()
    settings = Settings(
        source=str(Path(resolved_source(args.source)).resolve()), data=(args.data or out / "corpus").resolve(), out=out,
        budget_tokens=args.budget_tokens, seq_len=args.seq_len, batch=args.batch, prune_fraction=args.prune_fraction,
        target=parse_target(args.target), calib_samples=args.calib_samples, curve_eval_batches=args.curve_eval_batches,
        evals_per_stage=args.evals_per_stage, final_max_tokens=args.final_max_tokens, lr=args.lr,
        scratch_lr=args.scratch_lr, surgeon_shots=args.surgeon_shots, seed=args.seed, device=device, eta=args.eta,
        prune_lr=args.prune_lr, prune_overrides=tuple(args.prune_overrides), keep_checkpoints=args.keep_checkpoints)
    return settings, args


def write_report(rows: Dict[str, dict], failures: Dict[str, str], s: Settings, header: dict,
                 stage_seconds: Dict[str, float]) -> None:
    if rows:
        (s.out / "results.md").write_text(table(rows, s, header) + "\n")
        plot(rows, s.out / "eval_loss_vs_tokens.png")
    payload = {"settings": {**dataclasses.asdict(s), "data": str(s.data), "out": str(s.out)}, **header,
               "rows": rows, "failures": failures, "stage_seconds": stage_seconds}
    (s.out / "results.json").write_text(json.dumps(payload, indent=1, default=str))


def main(argv=None) -> int:
    s, args = parse_args(argv)
    run = Runner(s.out, in_process=args.in_process)
    if not (s.data / "manifest.json").exists():
        run("corpus", [PYTHON, REPO / "data_prep" / "build_sample_corpus.py", "--out", s.data])
    stages = Stages(s, run)
    stages.work.mkdir(parents=True, exist_ok=True)
    rows_dir = s.out / "rows"
    rows_dir.mkdir(exist_ok=True)
    started = utc_now()
    header = {"machine": machine(s.device), "date": started}
    rows, failures = {}, {}
    for name in sorted(args.rows, key=RUN_ORDER.index):
        saved = rows_dir / f"{name}.json"
        try:
            rows[name] = saved_row(saved) if args.resume and saved.exists() else run_row(name, stages, rows_dir)
        except RuntimeError as error:
            failures[name] = str(error)
            print(f"row {name} failed: {error}", file=sys.stderr, flush=True)
        header["date"] = run_dates(rows.values(), started)
        write_report(rows, failures, s, header, run.seconds)  # after every row: a cut-short run still reports
    if rows:
        print((s.out / "results.md").read_text())
    print(s.out / "results.json")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
