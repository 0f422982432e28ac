"""`make demo`: build the sample corpus, prune SmolLM2-135M with L0 masks, slice, export to HF.

Each step is the user-facing command a person would run by hand; the last line printed is the
exported Hugging Face model directory.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_YAML = REPO / "yamls" / "demo_smollm2_prune.yaml"


def run_step(title: str, command: list) -> None:
    print(f"\n=== {title}\n$ {' '.join(str(c) for c in command)}", flush=True)
    started = time.time()
    result = subprocess.run([str(c) for c in command], cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"demo step failed ({title}), exit code {result.returncode}")
    print(f"--- {title}: {time.time() - started:.0f} s", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out", help="folder for the corpus, checkpoints and exported model")
    parser.add_argument("--steps", type=int, default=None, help="pruning steps (default: the demo yaml's)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    corpus, run, exported = out / "corpus", out / "prune", out / "hf_pruned"
    python = sys.executable
    print("llmshearing demo: a DEMONSTRATION of the pipeline on CPU, not a converged pruning run.")
    if not (corpus / "manifest.json").exists():
        run_step("build the sample corpus", [python, REPO / "data_prep" / "build_sample_corpus.py", "--out", corpus])
    overrides = [f"data.path={corpus}", f"save_folder={run}"]
    if args.steps:
        overrides.append(f"max_duration={args.steps}ba")
    run_step("prune SmolLM2-135M with L0 masks", [python, REPO / "train.py", DEMO_YAML, *overrides])
    run_step(
        "slice with the final masks and export to Hugging Face",
        [python, "-m", "llmshearing.convert", "composer-to-hf", run / "latest-rank0.pt", exported, "--prune"],
    )
    print("\nThis was a short demonstration run; quality needs the full pruning + continued pre-training recipe.")
    print(exported)
    return 0


if __name__ == "__main__":
    sys.exit(main())
