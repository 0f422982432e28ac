"""python -m llmshearing.eval: per-domain loss/perplexity from any model format, bad input as exit 2."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from llmshearing.convert import export_hf
from llmshearing.convert.composer_checkpoint import save_composer_checkpoint
from llmshearing.eval.cli import main
from llmshearing.eval.perplexity import evaluate_domains
from llmshearing.model import LlamaForCausalLM
from llmshearing.model.composer_model import ComposerLlama
from tests.helpers import tiny_config

CORPUS_VOCAB = 49152


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    torch.manual_seed(0)
    return export_hf(LlamaForCausalLM(tiny_config(vocab_size=CORPUS_VOCAB)), tmp_path_factory.mktemp("eval") / "hf")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_hf_dir_writes_token_weighted_domains(tiny_dir, sample_corpus, tmp_path, capsys):
    out = tmp_path / "results.json"
    code, stdout, _ = run(capsys, tiny_dir, "--data", sample_corpus, "--out", out, "--max-tokens", "256")
    assert code == 0 and stdout.strip().splitlines()[-1] == str(out)
    result = json.loads(out.read_text())
    domains = result["domains"]
    assert set(domains) == {"prose", "encyclopedia", "code", "technical", "mail"}
    assert all(d["tokens"] == 2 * 127 for d in domains.values())  # 256 tokens = 2 samples of 128
    pooled = sum(d["loss"] * d["tokens"] for d in domains.values()) / result["total_tokens"]
    assert result["all"]["loss"] == pytest.approx(pooled)
    assert result["all"]["perplexity"] == pytest.approx(math.exp(pooled))
    assert result["parameters"] == sum(p.numel() for p in LlamaForCausalLM(tiny_config(vocab_size=CORPUS_VOCAB)).parameters())
    assert "code" in stdout and "perplexity" in stdout


def test_composer_checkpoint_matches_hf_dir(tiny_dir, sample_corpus, tmp_path, capsys):
    from llmshearing.convert.sources import load_model

    model = load_model(tiny_dir)
    checkpoint = save_composer_checkpoint(model, tmp_path / "model.pt")
    outs = [tmp_path / "hf.json", tmp_path / "composer.json"]
    for source, out in zip((tiny_dir, checkpoint), outs):
        assert run(capsys, source, "--data", sample_corpus, "--out", out, "--max-tokens", "128",
                   "--domains", "code", "mail")[0] == 0
    hf, composer = (json.loads(o.read_text()) for o in outs)
    assert composer["format"] == "composer" and hf["format"] == "hf"
    assert composer["all"]["loss"] == pytest.approx(hf["all"]["loss"], rel=1e-5)


def test_training_evaluators_report_the_same_numbers(tiny_dir, sample_corpus):
    """Composer's LanguageCrossEntropy over a domain's eval loader equals evaluate_domains."""
    from llmshearing.data.loaders import build_eval_dataloaders
    from llmshearing.convert.sources import load_model

    model = ComposerLlama.wrapping(load_model(tiny_dir))
    expected = evaluate_domains(model.model, sample_corpus, ["code"], seq_len=64, batch_size=4, max_batches=2)
    metric = model.get_metrics(is_train=False)["LanguageCrossEntropy"]
    with torch.no_grad():
        for batch in build_eval_dataloaders(sample_corpus, ["code"], batch_size=4, seq_len=64, max_batches=2)["code"]:
            model.update_metric(batch, model.eval_forward(batch), metric)
    assert float(metric.compute()) == pytest.approx(expected["code"].loss, rel=1e-5)
    assert int(metric.total_items) == expected["code"].tokens


@pytest.mark.parametrize("problem", ["format", "no_eval", "vocab", "not_found"])
def test_bad_input_is_one_line_and_exit_2(problem, tiny_dir, sample_corpus, tmp_path, capsys):
    model, data = tiny_dir, sample_corpus
    if problem == "format":
        model = tmp_path / "weights.npz"
        model.write_bytes(b"not a model")
    elif problem == "no_eval":
        data = tmp_path / "corpus"
        shutil.copytree(sample_corpus, data, ignore=shutil.ignore_patterns("eval"))
    elif problem == "vocab":
        torch.manual_seed(0)
        model = export_hf(LlamaForCausalLM(tiny_config()), tmp_path / "small_vocab")
    else:
        model = tmp_path / "missing"
    code, _, err = run(capsys, model, "--data", data, "--out", tmp_path / "r.json")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    expected = {"format": "unknown model format", "no_eval": "no eval splits", "vocab": "vocabulary mismatch",
                "not_found": "no such file"}[problem]
    assert expected in err
    assert not (tmp_path / "r.json").exists()


def test_training_logs_the_pooled_all_row(sample_corpus, tmp_path):
    from composer.loggers import InMemoryLogger

    from llmshearing.config import load_config
    from llmshearing.training import build_trainer

    yaml = tmp_path / "run.yaml"
    yaml.write_text(
        "model: {config: {vocab_size: 49152, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,\n"
        "                 num_attention_heads: 4, num_key_value_heads: 2}}\n"
        f"data: {{path: {sample_corpus}, seq_len: 32, eval_max_batches: 2}}\n"
        "global_train_batch_size: 4\ndevice_train_microbatch_size: 4\ndevice_eval_batch_size: 4\n"
        "max_duration: 2ba\neval_interval: 2ba\ndevice: cpu\nloggers: {in_memory: {}}\n")
    trainer = build_trainer(load_config(yaml))
    trainer.fit()
    logged = next(d for d in trainer.logger.destinations if isinstance(d, InMemoryLogger)).data
    expected = evaluate_domains(trainer.state.model.model, sample_corpus, seq_len=32, batch_size=4, max_batches=2)
    assert logged["metrics/eval/all/LanguageCrossEntropy"][-1][1] == pytest.approx(expected["all"].loss, rel=1e-5)
    assert float(logged["metrics/eval/code/LanguageCrossEntropy"][-1][1]) == pytest.approx(expected["code"].loss, rel=1e-5)
