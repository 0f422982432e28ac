"""The whole pipeline on CPU in minutes: prune SmolLM2-135M with L0 masks and dynamic batch loading,
slice, export to HF, continue pre-training the pruned model (dynamic loading again), export that.

    llmshearing demo [--out demo_out] [--warm-start] [--distil]   (also: make demo, python -m llmshearing.cli.demo)

It first builds the sample corpus. Each step is the command a person would run by hand; the last
line printed is the exported Hugging Face model directory. ``--warm-start`` starts the masks from
Minitron's activation importance (one ``prune minitron`` calibration first) and ``--distil`` distils
from the source in both stages: together, the learned method's best variant in the miniature
reproduction (docs/RESULTS.md).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from llmshearing.cli.command import command_parser, run_cli
from llmshearing.config import load_config
from llmshearing.errors import RunFailedError
from llmshearing.prune.cli import format_target
from llmshearing.recipes import RECIPES

DEMO_YAML = RECIPES / "demo_smollm2_prune.yaml"
CPT_YAML = RECIPES / "demo_smollm2_cpt.yaml"


def run_step(title: str, command: list) -> None:
    print(f"\n=== {title}\n$ {' '.join(str(c) for c in command)}", flush=True)
    started = time.time()
    result = subprocess.run([str(c) for c in command])
    if result.returncode != 0:
        raise RunFailedError(f"demo step failed ({title}), exit code {result.returncode}")
    print(f"--- {title}: {time.time() - started:.0f} s", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="folder for the corpus, checkpoints and exported model")
    parser.add_argument("--steps", type=int, default=None, help="pruning steps (default: the demo yaml's)")
    parser.add_argument("--cpt-steps", type=int, default=None, help="continued pre-training steps (default: the yaml's)")
    parser.add_argument("--warm-start", action="store_true",
                        help="start the L0 masks from Minitron's activation importance (a calibration run first)")
    parser.add_argument("--distil", action="store_true",
                        help="distil from the source model in both stages (logit KL, as yamls/minitron_kd_smollm2.yaml)")
    parser.set_defaults(work=demo)


def demo(args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    corpus, run, exported = out / "corpus", out / "prune", out / "hf_pruned"
    references, cpt_run, cpt_exported = out / "reference_losses.json", out / "cpt", out / "hf_cpt"
    llmshearing = [sys.executable, "-m", "llmshearing"]
    print("llmshearing demo: a DEMONSTRATION of the pipeline on CPU, not a converged pruning run.")
    if not (corpus / "manifest.json").exists():
        run_step("build the sample corpus",
                 [sys.executable, "-m", "llmshearing.data.sample_corpus", "--out", corpus])
    run_step("reference losses: the source model's own loss per domain (for dynamic batch loading)",
             [*llmshearing, "reference-loss", "--model", "smollm2", "--data", corpus,
              "--out", references, "--seq-len", "128", "--batches", "2", "--batch-size", "4"])
    teacher = ["teacher.path=smollm2", "teacher.temperature=1.0", "teacher.alpha=0.0"] if args.distil else []
    overrides = [f"data.path={corpus}", f"save_folder={run}", f"dynamic_loading.reference_losses_file={references}",
                 *teacher]
    if args.steps:
        overrides.append(f"max_duration={args.steps}ba")
    if args.warm_start:
        importance = out / "minitron"
        target = format_target(load_config(DEMO_YAML).pruning.target)
        run_step("Minitron's activation importance, to start the masks from (pruning.warm_start)",
                 [*llmshearing, "prune", "minitron", "--model", "smollm2", "--data", corpus, "--out", importance,
                  "--target", target, "--calib-samples", "64", "--seq-len", "128"])
        overrides.append(f"pruning.warm_start={importance}")
    run_step("prune SmolLM2-135M with L0 masks and dynamic batch loading",
             [*llmshearing, "train", DEMO_YAML, *overrides])
    run_step("slice with the final masks and export to Hugging Face",
             [*llmshearing, "export", run / "latest-rank0.pt", exported, "--prune"])
    cpt_overrides = [f"model.path={exported}", f"data.path={corpus}", f"save_folder={cpt_run}",
                     f"dynamic_loading.reference_losses_file={references}", *teacher]
    if args.cpt_steps:
        cpt_overrides.append(f"max_duration={args.cpt_steps}ba")
    run_step("continued pre-training of the pruned model with dynamic batch loading",
             [*llmshearing, "train", CPT_YAML, *cpt_overrides])
    run_step("export the continued model to Hugging Face",
             [*llmshearing, "export", cpt_run / "latest-rank0.pt", cpt_exported])
    print("\nThis was a short demonstration run; quality needs the full pruning + continued pre-training recipe.")
    print(f"pruned model: {exported}; domain weights: {run / 'domain_weights.png'}, {cpt_run / 'domain_weights.png'}")
    print(cpt_exported)


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m llmshearing.cli.demo") -> int:
    return run_cli(command_parser(prog, __doc__, add_arguments), argv)


if __name__ == "__main__":
    sys.exit(main())
