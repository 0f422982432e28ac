import math

import pytest
import torch

from llmshearing.data.calibration import calibration_batches
from llmshearing.data.corpus import CorpusError
from llmshearing.eval import evaluate_domains
from llmshearing.eval.perplexity import sequence_nll
from llmshearing.model import LlamaConfig, LlamaForCausalLM
from llmshearing.prune.cli import parse_target
from llmshearing.errors import ShapeError


def tiny_lm():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=24,
                                        num_hidden_layers=1, num_attention_heads=2)).eval()


def test_calibration_batches_are_balanced_deterministic_and_shaped(sample_corpus):
    batches = calibration_batches(sample_corpus, num_samples=11, seq_len=64, batch_size=4, seed=3)
    assert [b.shape for b in batches] == [(4, 64), (4, 64), (3, 64)]
    again = calibration_batches(sample_corpus, num_samples=11, seq_len=64, batch_size=4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    other = calibration_batches(sample_corpus, num_samples=11, seq_len=64, batch_size=4, seed=4)
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_empty_calibration_set_is_an_error(sample_corpus):
    with pytest.raises(CorpusError, match="empty"):
        calibration_batches(sample_corpus, num_samples=0)


def test_per_domain_loss_is_token_weighted_mean_nll(sample_corpus):
    model = tiny_lm()
    results = evaluate_domains(model, sample_corpus, ["code", "mail"], seq_len=32, batch_size=4, max_batches=2)
    from llmshearing.data.loaders import build_eval_dataloaders

    loaders = build_eval_dataloaders(sample_corpus, ["code"], batch_size=4, seq_len=32, max_batches=2)
    nll = sum(float(sequence_nll(model, b["input_ids"]).sum()) for b in loaders["code"])
    tokens = sum(b["input_ids"].shape[0] * 31 for b in loaders["code"])
    assert results["code"].tokens == tokens == 8 * 31
    assert results["code"].loss == pytest.approx(nll / tokens, rel=1e-6)
    assert results["code"].perplexity == pytest.approx(math.exp(nll / tokens), rel=1e-6)
    both = (results["code"].loss * results["code"].tokens + results["mail"].loss * results["mail"].tokens)
    assert results["all"].loss == pytest.approx(both / (results["code"].tokens + results["mail"].tokens))


def test_parse_target():
    assert parse_target("hidden_size=384, num_hidden_layers=20") == {"hidden_size": 384, "num_hidden_layers": 20}
    with pytest.raises(ShapeError):
        parse_target("hidden_size")
    with pytest.raises(ShapeError):
        parse_target("hidden_size=big")
