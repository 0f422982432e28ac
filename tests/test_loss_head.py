"""The chunked loss head (model/loss_head.py, model/next_token_loss.py): the same values and gradients
as the whole-logits losses it replaces, with ignored targets, masks, tied and untied heads, bf16
autocast and a 128k vocabulary; the model, metrics, distillation and perplexity wired to it."""
from __future__ import annotations

import copy
import sys
import types
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from llmshearing.composer.distillation import Distillation, logit_kl
from llmshearing.model import loss_head
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.model.loss_head import (IGNORE_INDEX, chunked_cross_entropy, chunked_kl_divergence,
                                         chunk_memory_message, head_losses)
from llmshearing.model.next_token_loss import LossHeadOutput, NextTokenLoss
from tests.helpers import tiny_config, tiny_model

FP32 = dict(rtol=1e-5, atol=1e-6)


def leaf(*shape, seed=0, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).requires_grad_(True)


def targets_with_ignored(count: int, vocab: int, seed: int = 0) -> torch.Tensor:
    targets = torch.randint(0, vocab, (count,), generator=torch.Generator().manual_seed(seed))
    targets[::5] = IGNORE_INDEX
    return targets


def grads(value, *tensors):
    return torch.autograd.grad(value, tensors, retain_graph=True)


def assert_close_to_scale(got, expected, rtol=1e-5):
    """Equal within fp32 rounding: differences measured against the tensor's largest entry."""
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * max(1.0, float(expected.detach().abs().max())))


def assert_same(reference, chunked, tensors, rtol=1e-5):
    assert_close_to_scale(chunked, reference, rtol)
    for expected, got in zip(grads(reference, *tensors), grads(chunked, *tensors)):
        assert_close_to_scale(got, expected, rtol)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_equals_the_whole_logits_loss(chunk, reduction):
    hidden, weight = leaf(2, 21, 16), leaf(53, 16, seed=1)
    targets = targets_with_ignored(42, 53).view(2, 21)
    reference = F.cross_entropy(F.linear(hidden, weight).reshape(-1, 53).float(), targets.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction=reduction)
    chunked = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=chunk, reduction=reduction)
    assert_same(reference, chunked, (hidden, weight))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_divergence_equals_logit_kl(temperature):
    hidden, weight = leaf(30, 12), leaf(41, 12, seed=1)
    teacher_hidden, teacher_weight = leaf(30, 20, seed=2).detach(), leaf(41, 20, seed=3).detach()
    valid = targets_with_ignored(30, 41) != IGNORE_INDEX
    reference = logit_kl(F.linear(hidden, weight), F.linear(teacher_hidden, teacher_weight), temperature, valid)
    chunked = chunked_kl_divergence(hidden, weight, teacher_hidden, teacher_weight, temperature=temperature,
                                    valid=valid, chunk_tokens=8)
    assert_same(reference, chunked, (hidden, weight))


@pytest.mark.parametrize("temperature", [1.0, 1.5])  # at T = 1 both terms share one softmax
def test_mixed_objective_is_the_sum_of_both_terms_and_per_token_values_are_kept(temperature):
    hidden, weight = leaf(25, 12), leaf(33, 12, seed=1)
    teacher_hidden, teacher_weight = leaf(25, 12, seed=2).detach(), leaf(33, 12, seed=3).detach()
    targets = targets_with_ignored(25, 33)
    valid = targets != IGNORE_INDEX
    logits = F.linear(hidden, weight)
    lm = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    kd = logit_kl(logits, F.linear(teacher_hidden, teacher_weight), temperature, valid)
    count = valid.sum()
    losses = head_losses(hidden, weight, targets, chunk_tokens=6, lm_scale=0.3 / count,
                         teacher_hidden=teacher_hidden, teacher_weight=teacher_weight, temperature=temperature,
                         kd_scale=0.7 * temperature ** 2 / count)
    assert_same(0.3 * lm + 0.7 * kd, losses.objective, (hidden, weight))
    assert not losses.token_nll.requires_grad and torch.all(losses.token_nll[~valid] == 0)
    torch.testing.assert_close(losses.token_nll.sum() / count, lm.detach(), **FP32)
    torch.testing.assert_close(losses.token_kl.sum() / count * temperature ** 2, kd.detach(), **FP32)


def test_a_128k_vocabulary_gives_the_same_losses_and_gradients():
    vocab = 128_256
    hidden, weight = leaf(24, 16, scale=2.0), leaf(vocab, 16, seed=1)
    teacher_hidden, teacher_weight = leaf(24, 8, seed=2).detach(), leaf(vocab, 8, seed=3).detach()
    targets = targets_with_ignored(24, vocab)
    logits = F.linear(hidden, weight)
    lm = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    assert_same(lm, chunked_cross_entropy(hidden, weight, targets, chunk_tokens=10), (hidden, weight))
    valid = targets != IGNORE_INDEX
    kd = logit_kl(logits, F.linear(teacher_hidden, teacher_weight), 2.0, valid)
    chunked = chunked_kl_divergence(hidden, weight, teacher_hidden, teacher_weight, temperature=2.0, valid=valid,
                                    chunk_tokens=10)
    assert_same(kd, chunked, (hidden, weight))


def test_bf16_autocast_matches_the_autocast_whole_logits_loss():
    hidden, weight = leaf(40, 32), leaf(300, 32, seed=1)
    teacher_hidden, teacher_weight = leaf(40, 32, seed=2).detach(), leaf(300, 32, seed=3).detach()
    targets = targets_with_ignored(40, 300)
    valid = targets != IGNORE_INDEX
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = F.linear(hidden, weight)
        assert logits.dtype == torch.bfloat16
        lm = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
        with torch.autocast("cpu", enabled=False):  # as the teacher always ran: in its own dtype
            teacher_logits = F.linear(teacher_hidden, teacher_weight)
        kd = logit_kl(logits, teacher_logits, 2.0, valid)
        chunked_lm = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=16)
        chunked_kd = chunked_kl_divergence(hidden, weight, teacher_hidden, teacher_weight, temperature=2.0,
                                           valid=valid, chunk_tokens=16)
    bf16 = dict(rtol=2e-2, atol=2e-3)  # one bf16 matmul of every token vs a sum of per-chunk bf16 matmuls
    torch.testing.assert_close(chunked_lm, lm, **FP32)  # the same bf16 logits, the same fp32 softmax
    torch.testing.assert_close(chunked_kd, kd, **FP32)
    for reference, chunked in ((lm, chunked_lm), (kd, chunked_kd)):
        for expected, got in zip(grads(reference, hidden, weight), grads(chunked, hidden, weight)):
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, expected, **bf16)


def test_bf16_weights_get_bf16_gradients_accumulated_in_fp32():
    hidden, weight = leaf(40, 32).bfloat16(), leaf(300, 32, seed=1).bfloat16()
    hidden.retain_grad()
    targets = targets_with_ignored(40, 300)
    lm = F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=IGNORE_INDEX)
    chunked = chunked_cross_entropy(hidden, weight, targets, chunk_tokens=16)
    torch.testing.assert_close(chunked, lm, **FP32)
    for expected, got in zip(grads(lm, hidden, weight), grads(chunked, hidden, weight)):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-3)


def test_no_logits_beyond_one_chunk_are_made(monkeypatch):
    made = []
    linear = F.linear

    def recording_linear(x, w):
        out = linear(x, w)
        made.append(out.shape[0])
        return out

    monkeypatch.setattr(loss_head.F, "linear", recording_linear)
    hidden, weight = leaf(100, 8), leaf(50, 8, seed=1)
    chunked_cross_entropy(hidden, weight, targets_with_ignored(100, 50), chunk_tokens=16).backward()
    assert max(made) == 16 and sum(made) == 100  # each token's logits made once: no recomputation


def test_without_grad_mode_nothing_is_kept_for_backward():
    hidden, weight = leaf(10, 8), leaf(20, 8, seed=1)
    with torch.no_grad():
        losses = head_losses(hidden, weight, targets_with_ignored(10, 20), chunk_tokens=4)
    assert losses.objective.grad_fn is None and losses.token_kl is None


def test_bad_arguments_are_one_line_errors():
    hidden, weight = leaf(10, 8), leaf(20, 8, seed=1)
    with pytest.raises(ValueError, match="chunk_tokens"):
        head_losses(hidden, weight, torch.zeros(10, dtype=torch.long), chunk_tokens=0)
    with pytest.raises(ValueError, match="targets"):
        head_losses(hidden, weight, torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        chunked_cross_entropy(hidden, weight, torch.zeros(10, dtype=torch.long), reduction="none")


# --- the model ----------------------------------------------------------------------------------

def masks_for(config, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden_z = torch.rand(config.hidden_size, generator=generator) + 0.5
    hidden_z[::4] = 0.0
    return {"hidden_z": hidden_z.requires_grad_(True),
            "head_z": (torch.rand(config.num_hidden_layers, config.num_attention_heads, generator=generator) + 0.5)}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_model_loss_and_gradients_equal_the_logits_loss(tied, masked):
    model = tiny_model(tie_word_embeddings=tied).train()
    ids = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(0))
    targets = ids[:, 1:].clone()
    targets[0, :4] = IGNORE_INDEX
    masks = masks_for(model.config) if masked else None
    logits = model(ids, masks)[:, :-1]
    reference = F.cross_entropy(logits.reshape(-1, 97).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    outputs = model(ids, masks, head=NextTokenLoss(targets, chunk_tokens=5))
    assert isinstance(outputs, LossHeadOutput) and outputs.token_nll.shape == targets.shape
    tensors = list(model.parameters()) + ([masks["hidden_z"]] if masked else [])
    assert_same(reference, outputs.objective, tensors)
    assert int(outputs.tokens) == (targets != IGNORE_INDEX).sum()


def composer_batch(seed=0, labels=True):
    ids = torch.randint(0, 97, (2, 13), generator=torch.Generator().manual_seed(seed))
    batch = {"input_ids": ids}
    if labels:
        batch["labels"] = ids.clone()
        batch["labels"][1, 5:] = IGNORE_INDEX
    return batch


def test_composer_model_loss_and_metrics_match_the_unchunked_path(caplog):
    torch.manual_seed(0)
    streamed = ComposerLlama(tiny_config(), loss_chunk_tokens=4)
    whole = copy.deepcopy(streamed)
    whole.loss_chunk_tokens = 0
    batch = composer_batch()
    with caplog.at_level("INFO", logger="llmshearing.model.composer_model"):
        outputs = streamed(batch)
        streamed(batch)
    assert isinstance(outputs, LossHeadOutput) and caplog.text.count("loss head: logits in chunks of 4") == 1
    logits = whole(batch)
    assert logits.shape == (2, 13, 97)
    torch.testing.assert_close(streamed.loss(outputs, batch), whole.loss(logits, batch), **FP32)
    for expected, got in zip(grads(whole.loss(logits, batch), *whole.parameters()),
                             grads(streamed.loss(outputs, batch), *streamed.parameters())):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for is_train in (True, False):
        for name, metric in streamed.get_metrics(is_train).items():
            reference = whole.get_metrics(is_train)[name]
            streamed.update_metric(batch, outputs, metric)
            whole.update_metric(batch, logits, reference)
            assert int(metric.total_items) == int(reference.total_items) == 12 + 4
            torch.testing.assert_close(metric.compute(), reference.compute(), **FP32)
    with torch.no_grad():
        evaluated = streamed.eval().eval_forward(batch)
        assert streamed(batch).shape == (2, 13, 97)  # eval mode: logits for anyone calling the model
    assert evaluated.objective.grad_fn is None
    torch.testing.assert_close(evaluated.lm_loss, whole.eval().loss(whole(batch), batch), **FP32)


def test_per_sample_losses_come_from_the_per_token_losses():
    from llmshearing.dynamic_loading.domain_loss import sample_token_losses

    torch.manual_seed(0)
    model = ComposerLlama(tiny_config(), loss_chunk_tokens=3)
    batch = composer_batch()
    sums, counts = sample_token_losses(model(batch), batch)
    expected_sums, expected_counts = sample_token_losses(model.model(batch["input_ids"]), batch)
    torch.testing.assert_close(sums, expected_sums, rtol=1e-6, atol=1e-6)
    assert counts.tolist() == expected_counts.tolist() == [12, 4]


def test_sequence_nll_streams_the_same_per_sequence_sums():
    from llmshearing.eval.perplexity import sequence_nll

    model = tiny_model()
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(0))
    logits = model(ids)[:, :-1].float()
    expected = F.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1), reduction="none").view(3, 10).sum(1)
    torch.testing.assert_close(sequence_nll(model, ids, chunk_tokens=7), expected, **FP32)


# --- distillation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_distillation_head_equals_the_logits_distillation_loss(alpha):
    teacher = tiny_model(seed=3)
    algorithm = Distillation(teacher, temperature=2.0, alpha=alpha)
    algorithm.teacher = algorithm._prepare_teacher(teacher, torch.device("cpu"))
    student = tiny_model(seed=1).train().requires_grad_(True)
    batch = composer_batch()
    targets = batch["labels"][:, 1:]

    logits = student(batch["input_ids"])
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, 97), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    state = SimpleNamespace(batch=batch, outputs=logits, loss=lm)
    reference = algorithm._distillation_loss(state)

    outputs = student(batch["input_ids"], head=algorithm.student_head(batch["input_ids"], targets, 5))
    state = SimpleNamespace(batch=batch, outputs=outputs, loss=outputs.objective)
    streamed = algorithm._distillation_loss(state)
    assert set(streamed) == set(reference) == {"total", "lm", "kd"}
    for term in ("lm", "kd"):
        torch.testing.assert_close(streamed[term], reference[term].detach(), **FP32)
    params = list(student.parameters())
    assert_same(reference["total"], streamed["total"], params)
    assert all(p.grad is None for p in teacher.parameters())


def test_distillation_head_keeps_the_teacher_out_of_autocast_and_the_student_in_it():
    teacher = tiny_model(seed=3)
    algorithm = Distillation(teacher, temperature=1.0, alpha=0.5)
    algorithm.teacher = algorithm._prepare_teacher(teacher, torch.device("cpu"))
    student = tiny_model(seed=1).train().requires_grad_(True)
    batch = composer_batch(labels=False)
    targets = batch["input_ids"][:, 1:]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = student(batch["input_ids"])
        outputs = student(batch["input_ids"], head=algorithm.student_head(batch["input_ids"], targets, 4))
    teacher_logits = teacher(batch["input_ids"])  # fp32, outside autocast: as the AFTER_LOSS teacher was
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, 97).float(), targets.reshape(-1))
    kd = logit_kl(logits[:, :-1], teacher_logits[:, :-1], 1.0)
    torch.testing.assert_close(outputs.objective, 0.5 * lm + 0.5 * kd, **FP32)
    assert outputs.objective.requires_grad


def test_the_teacher_is_not_run_by_a_forward_without_gradients():
    calls = []
    model = ComposerLlama(tiny_config(), loss_chunk_tokens=4)
    model.distillation_head = lambda *args: calls.append(args)
    with torch.no_grad():
        outputs = model(composer_batch())
    assert isinstance(outputs, LossHeadOutput) and outputs.kd is None and not calls


# --- settings and the optional fused kernel ----------------------------------------------------------

def test_chunk_size_and_kernel_are_checked_config_keys(tmp_path):
    from llmshearing.config import load_config
    from llmshearing.config.schema import TrainConfig
    from llmshearing.errors import ConfigError
    from llmshearing.training import loss_head_settings

    cfg = TrainConfig()
    assert loss_head_settings(cfg) == (512, "torch")
    cfg.model.loss_chunk_tokens = -1
    with pytest.raises(ConfigError, match="loss_chunk_tokens"):
        loss_head_settings(cfg)
    with pytest.raises(ConfigError, match="model.loss_kernel must be one of torch, liger; got 'triton'"):
        load_config("yamls/tiny_prune.yaml", ["model.loss_kernel=triton"])


def test_memory_message_names_the_chunk_and_the_whole_batch():
    message = chunk_memory_message(1024, 128_256, 8192)
    assert "0.49 GiB per fp32 buffer" in message and "3.91 GiB" in message


def test_liger_is_used_only_when_installed_and_on_a_gpu(monkeypatch):
    hidden, weight = leaf(12, 8), leaf(30, 8, seed=1)
    targets = targets_with_ignored(12, 30)
    calls = []

    def fake_liger(h, w, t, ignore_index, reduction):
        calls.append(reduction)
        return F.cross_entropy(F.linear(h, w), t, ignore_index=ignore_index, reduction=reduction), None

    functional = types.ModuleType("liger_kernel.transformers.functional")
    functional.liger_fused_linear_cross_entropy = fake_liger
    chunked = chunked_cross_entropy(hidden, weight, targets, kernel="liger")  # not installed: the torch chunks
    for name in ("liger_kernel", "liger_kernel.transformers"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", functional)
    assert chunked_cross_entropy(hidden, weight, targets, kernel="liger") is not None and not calls  # on a CPU
    monkeypatch.setattr(loss_head, "_on_gpu", lambda tensor: True)
    assert chunked_cross_entropy(hidden, weight, targets, kernel="torch") is not None and not calls
    fused = chunked_cross_entropy(hidden, weight, targets, kernel="liger")
    assert calls == ["mean"]
    torch.testing.assert_close(fused, chunked, **FP32)
    outputs = NextTokenLoss(targets.view(1, 12), kernel="liger")(torch.cat([hidden, hidden[:1]]).unsqueeze(0), weight)
    assert outputs.token_nll is None and calls == ["mean", "mean"]
