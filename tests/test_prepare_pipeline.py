"""A corpus prepared from a user's own files runs through every method that reads a corpus:
reference losses, Sheared pruning with dynamic loading, continued pre-training on the cpt
split, per-domain eval and Minitron calibration."""
from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "yamls" / "tiny_prune.yaml"
SEQ_LEN = 64
VOCAB = 49152


def _write_inputs(root: Path) -> dict[str, str]:
    """Two domains of real text: standard-library docstrings as JSONL, its sources as .txt files."""
    import email
    import json as json_module
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = root / "docs"
    docs.mkdir(parents=True)
    import argparse, collections, logging, os, re, unittest  # noqa: E401 - docstring sources

    modules = [json_module, email, inspect, math, subprocess, pathlib_module(), argparse, collections, logging,
               os, re, unittest]
    texts = [inspect.getdoc(member) for module in modules for _, member in inspect.getmembers(module)
             if callable(member) and inspect.getdoc(member) and len(inspect.getdoc(member)) > 200]
    half = len(texts) // 2
    with (docs / "docstrings.jsonl").open("w", encoding="utf-8") as handle:
        for text in texts[:half]:
            handle.write(json.dumps({"text": text}) + "\n")
    pq.write_table(pa.table({"text": texts[half:]}), docs / "more.parquet")
    code = root / "code"
    code.mkdir()
    sources = sorted(Path(email.__file__).parent.glob("*.py")) + sorted(Path(json_module.__file__).parent.glob("*.py"))
    for index, path in enumerate(sources):
        (code / f"{index:03d}_{path.stem}.txt").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return {"docs": str(docs), "code": str(code / "*.txt")}


def pathlib_module():
    import pathlib

    return pathlib


@pytest.fixture(scope="module")
def user_corpus(tmp_path_factory) -> Path:
    from llmshearing.data.prepare.cli import main

    root = tmp_path_factory.mktemp("byo")
    specs = _write_inputs(root / "inputs")
    out = root / "corpus"
    code = main(["--tokenizer", "smollm2", "--out", str(out), "--seq-len", str(SEQ_LEN),
                 *[arg for name, spec in specs.items() for arg in ("--domain", f"{name}={spec}")],
                 "--eval-tokens", "2k", "--train-tokens", "24k", "--cpt-tokens", "8k", "--workers", "2",
                 "--no-progress"])
    assert code == 0
    return out


def test_the_prepared_corpus_has_every_split_and_the_model_vocabulary(user_corpus):
    manifest = json.loads((user_corpus / "manifest.json").read_text())
    assert manifest["domains"] == ["docs", "code"] and manifest["splits"] == ["train", "eval", "cpt"]
    assert manifest["vocab_size"] == VOCAB and manifest["token_dtype"] == "uint16"
    for domain in manifest["domains"]:
        samples = {split: manifest["per_domain"][domain][split]["samples"] for split in manifest["splits"]}
        assert samples == {"train": math.ceil(12_000 / SEQ_LEN), "eval": math.ceil(2_000 / SEQ_LEN),
                           "cpt": math.ceil(4_000 / SEQ_LEN)}


def test_reference_losses_score_each_domain(user_corpus, tmp_path, capsys):
    from llmshearing.convert import save_composer_checkpoint
    from llmshearing.dynamic_loading import reference_loss
    from llmshearing.model.composer_model import ComposerLlama
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    checkpoint = save_composer_checkpoint(ComposerLlama(tiny_config(vocab_size=VOCAB)), tmp_path / "m.pt")
    out = tmp_path / "refs.json"
    assert reference_loss.main(["--model", str(checkpoint), "--data", str(user_corpus), "--out", str(out),
                                "--batches", "2", "--batch-size", "2"]) == 0
    losses = reference_loss.read_reference_losses(out)
    assert list(losses) == ["docs", "code"]
    assert all(abs(value - math.log(VOCAB)) < 1.5 for value in losses.values())  # an untrained model


def _train(*overrides) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), str(TINY), *map(str, overrides)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def test_pruning_with_dynamic_loading_then_cpt_on_the_cpt_split(user_corpus, tmp_path):
    result = _train(f"data.path={user_corpus}", f"save_folder={tmp_path / 'prune'}", "max_duration=8ba",
                    "save_interval=8ba", "eval_interval=100ba", "dynamic_loading.update_interval=4",
                    "dynamic_loading.loss_batches=1", "dynamic_loading.reference_losses={docs: 1.0, code: 9.0}")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "prune" / "latest-rank0.pt", weights_only=False)["state"]
    history = state["callbacks"]["DynamicBatchLoading"]
    assert history["history_steps"] == [0, 4, 8]
    docs_weight = [weights[0] for weights in history["history_weights"]]
    assert docs_weight[0] == pytest.approx(0.5) and docs_weight[-1] > docs_weight[0]  # far above its reference

    result = _train(f"data.path={user_corpus}", "data.train_split=cpt", "pruning=null",
                    f"save_folder={tmp_path / 'cpt'}", "max_duration=4ba", "save_interval=4ba", "eval_interval=100ba")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "cpt" / "latest-rank0.pt").exists()


def test_a_missing_cpt_split_is_one_line(sample_corpus):
    result = _train(f"data.path={sample_corpus}", "data.train_split=cpt", "pruning=null", "max_duration=1ba")
    assert result.returncode != 0
    assert "has no 'cpt' split; prepare it with python -m llmshearing.data.prepare --cpt-tokens" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_scores_every_domain_of_the_prepared_corpus(user_corpus, tmp_path, capsys):
    from llmshearing.convert import export_hf
    from llmshearing.eval.cli import main
    from llmshearing.model import LlamaForCausalLM
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    model_dir = export_hf(LlamaForCausalLM(tiny_config(vocab_size=VOCAB)), tmp_path / "hf")
    out = tmp_path / "eval.json"
    assert main([str(model_dir), "--data", str(user_corpus), "--out", str(out), "--max-tokens", "128"]) == 0
    result = json.loads(out.read_text())
    assert set(result["domains"]) == {"docs", "code"}
    assert all(domain["tokens"] == 2 * (SEQ_LEN - 1) for domain in result["domains"].values())
    assert main([str(model_dir), "--data", str(user_corpus), "--out", str(out), "--split", "cpt",
                 "--max-tokens", "64"]) == 0


def test_minitron_calibrates_on_the_prepared_corpus(user_corpus, tmp_path, capsys):
    from llmshearing.convert import export_hf
    from llmshearing.model import LlamaForCausalLM
    from llmshearing.prune.cli import main
    from tests.test_convert import save_tiny_tokenizer
    from tests.test_minitron_cli import CONFIG, TARGET

    torch.manual_seed(0)
    model_dir = tmp_path / "source"
    export_hf(LlamaForCausalLM(CONFIG), model_dir)
    save_tiny_tokenizer(model_dir, CONFIG.vocab_size)
    out = tmp_path / "pruned"
    code = main(["minitron", "--model", str(model_dir), "--data", str(user_corpus), "--out", str(out),
                 "--target", TARGET, "--calib-samples", "8", "--seq-len", "32", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    scores = json.loads((out / "importance.json").read_text())
    assert scores["metadata"]["calibration"]["samples"] == 8
