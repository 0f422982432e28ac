"""The loss head: next-token cross-entropy and KL(teacher ‖ student) computed from the final hidden
states and the lm_head weight a chunk of tokens at a time, never from the whole batch's logits.

Each chunk's logits [chunk, vocab] are made, reduced to per-token losses and, when gradients are
wanted, turned at once into the chunk's share of the gradients: its rows of d(hidden) and a term of
d(weight), summed in fp32. The objective is one number whose gradient with respect to a chunk's
logits is known in the forward pass (softmax minus one-hot for the cross-entropy, student minus
teacher probabilities over T for the KL), so backward only scales what the forward kept by the one
value it receives. Recomputing each chunk's logits in backward instead would cost a fourth head
matmul per step and would need both heads' weights again in backward, where FSDP no longer holds
them unsharded (the frozen teacher never takes part in backward at all): here each weight is read
only inside its own model's forward.

Memory: a few [chunk, vocab] fp32 buffers at a time, plus d(hidden) [tokens, d] and d(weight)
[vocab, d] in fp32 kept from forward to backward (the sizes the unchunked backward makes anyway).
Values and gradients equal the unchunked loss within fp32 rounding (tests/test_loss_head.py): under
autocast the logits and gradient matmuls run in the autocast dtype as ``nn.Linear`` does, the
softmax in fp32, and the teacher's logits in the teacher's own dtype, as before.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
DEFAULT_CHUNK_TOKENS = 512
KERNELS = ("torch", "liger")
Scale = Union[float, torch.Tensor]


class HeadLosses(NamedTuple):
    """What :func:`head_losses` returns, per token flattened like the hidden states."""

    objective: torch.Tensor  # lm_scale · Σ nll + kd_scale · Σ kl: the one differentiable value
    token_nll: torch.Tensor  # [N] fp32 next-token loss, 0 where the target is ignored (no gradient)
    # [N] fp32 KL at temperature T (not × T²), 0 where ignored; None without a teacher
    token_kl: Optional[torch.Tensor]


@dataclass(frozen=True)
class _Settings:
    chunk_tokens: int
    ignore_index: int
    temperature: float
    hidden_grad: bool
    weight_grad: bool


def head_losses(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                chunk_tokens: int = DEFAULT_CHUNK_TOKENS, ignore_index: int = IGNORE_INDEX,
                lm_scale: Optional[Scale] = 1.0, teacher_hidden: Optional[torch.Tensor] = None,
                teacher_weight: Optional[torch.Tensor] = None, temperature: float = 1.0,
                kd_scale: Optional[Scale] = None) -> HeadLosses:
    """Per-token losses of ``hidden @ weight.T`` against ``targets`` and the objective
    ``lm_scale · Σ nll + kd_scale · Σ KL(teacher ‖ student at T)``, chunk by chunk.

    ``hidden`` [..., d] and ``targets`` [...] are flattened alike. A scale of None leaves its term
    out of the objective (its per-token values are still computed, without gradient work). The
    teacher's hidden states and weight take no gradient. Gradients are prepared only when grad mode
    is on and ``hidden`` or ``weight`` requires grad.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"{hidden.shape[0]} hidden states but {targets.shape[0]} targets")
    if (teacher_hidden is None) != (teacher_weight is None):
        raise ValueError("give both the teacher's hidden states and its lm_head weight, or neither")
    if teacher_hidden is not None:
        teacher_hidden = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
        teacher_weight = teacher_weight.detach()
        if teacher_hidden.shape[0] != hidden.shape[0] or teacher_weight.shape[0] != weight.shape[0]:
            raise ValueError("the teacher's hidden states and vocabulary must match the student's")
    grads = torch.is_grad_enabled() and (lm_scale is not None or kd_scale is not None)
    settings = _Settings(chunk_tokens, ignore_index, float(temperature), grads and hidden.requires_grad,
                         grads and weight.requires_grad)
    objective, token_nll, token_kl = _ChunkedHead.apply(hidden, weight, targets, teacher_hidden, teacher_weight,
                                                        lm_scale, kd_scale, settings)
    return HeadLosses(objective, token_nll, token_kl if teacher_hidden is not None else None)


class _ChunkedHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, teacher_hidden, teacher_weight, lm_scale, kd_scale, settings):
        count = hidden.shape[0]
        token_nll = torch.zeros(count, dtype=torch.float32, device=hidden.device)
        token_kl = torch.zeros(count if teacher_hidden is not None else 0, dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if settings.hidden_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if settings.weight_grad else None
        for start in range(0, count, settings.chunk_tokens):
            rows = slice(start, min(start + settings.chunk_tokens, count))
            chunk = hidden[rows]
            # the logits go straight in (no reference kept here), so the callee can free them early
            grad_logits = _chunk_losses(F.linear(chunk, weight),  # autocast applies here as in nn.Linear
                                        targets[rows], _teacher_logits(teacher_hidden, teacher_weight, rows),
                                        lm_scale, kd_scale, settings, token_nll[rows],
                                        token_kl[rows] if teacher_hidden is not None else None)
            if grad_logits is None:
                continue
            if grad_hidden is not None:
                grad_hidden[rows] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ chunk
        objective = token_nll.new_zeros(())
        if lm_scale is not None:
            objective = objective + lm_scale * token_nll.sum()
        if kd_scale is not None and teacher_hidden is not None:
            objective = objective + kd_scale * token_kl.sum()
        ctx.grads = (grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(token_nll, token_kl)
        return objective, token_nll, token_kl

    @staticmethod
    def backward(ctx, grad_objective, _grad_nll, _grad_kl):
        if ctx.grads is None:
            raise RuntimeError("the loss head's gradients were handed out already: one backward per forward")
        grad_hidden, grad_weight = ctx.grads
        ctx.grads = None  # scaled in place and given away: the buffers are not kept twice
        if grad_hidden is not None:
            grad_hidden = grad_hidden.mul_(grad_objective.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(grad_objective).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None


def _teacher_logits(teacher_hidden, teacher_weight, rows) -> Optional[torch.Tensor]:
    if teacher_hidden is None:
        return None
    with torch.autocast(teacher_hidden.device.type, enabled=False):  # the teacher computes in its own dtype
        return F.linear(teacher_hidden[rows], teacher_weight)


def _chunk_losses(logits, targets, teacher_logits, lm_scale, kd_scale, settings: _Settings,
                  nll_out: torch.Tensor, kl_out: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Writes one chunk's per-token losses; returns d(objective)/d(logits) in the logits' dtype (what
    the backward of ``logits.float()`` would hand ``nn.Linear``), or None without gradient work.
    In place where it can: two [chunk, vocab] fp32 buffers at a time without a teacher, about four with."""
    dtype = logits.dtype
    temperature = settings.temperature
    valid = (targets != settings.ignore_index).unsqueeze(-1)
    picked = torch.where(valid, targets.unsqueeze(-1), 0)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    student = log_probs if teacher_logits is None or temperature == 1.0 else \
        torch.log_softmax(logits.float() / temperature, dim=-1)
    del logits
    nll_out.copy_(torch.where(valid, -log_probs.gather(-1, picked), 0.0).squeeze(-1))
    teacher = None
    if teacher_logits is not None:
        teacher = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
        del teacher_logits
        kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=-1, keepdim=True)
        kl_out.copy_(torch.where(valid, kl, 0.0).squeeze(-1))
    wants_grad = settings.hidden_grad or settings.weight_grad
    lm = lm_scale if wants_grad else None
    # d KL(p ‖ softmax(z / T)) / dz = (q - p) / T, q and p the tempered student and teacher distributions
    kd = kd_scale / temperature if wants_grad and kd_scale is not None and teacher is not None else None
    if lm is None and kd is None:
        return None
    # lm (softmax - one-hot) + kd (softmax_T - teacher_T), zero on the rows of ignored targets
    if kd is None:
        grad = log_probs.exp_().mul_(lm)
    elif student is log_probs:  # T = 1: one softmax serves both terms
        grad = log_probs.exp_().mul_(kd if lm is None else lm + kd).sub_(teacher.exp_().mul_(kd))
    else:
        grad = student.exp_().sub_(teacher.exp_()).mul_(kd)
        if lm is not None:
            grad.add_(log_probs.exp_().mul_(lm))
    if lm is not None:
        grad.scatter_add_(-1, picked, -lm * torch.ones(picked.shape, dtype=grad.dtype, device=grad.device))
    return grad.mul_(valid).to(dtype)


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                          chunk_tokens: int = DEFAULT_CHUNK_TOKENS, ignore_index: int = IGNORE_INDEX,
                          reduction: str = "mean", kernel: str = "torch") -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets)`` (mean or sum over the non-ignored targets)
    without the whole logits tensor. ``kernel="liger"`` uses liger-kernel's fused linear
    cross-entropy where it is installed and the tensors are on a GPU, this module's chunks elsewhere."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    fused = fused_cross_entropy(kernel, hidden)
    if fused is not None:
        return fused(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                     ignore_index=ignore_index, reduction=reduction)
    scale = 1.0 if reduction == "sum" else 1.0 / (targets != ignore_index).sum()
    return head_losses(hidden, weight, targets, chunk_tokens=chunk_tokens, ignore_index=ignore_index,
                       lm_scale=scale).objective


def chunked_kl_divergence(hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                          teacher_weight: torch.Tensor, *, temperature: float = 1.0,
                          valid: Optional[torch.Tensor] = None,
                          chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Mean over (valid) tokens of KL(teacher ‖ student) of the tempered distributions, times T²
    (``distillation.logit_kl`` of the two models' logits), without either logits tensor."""
    if valid is None:
        valid = torch.ones(hidden.shape[:-1], dtype=torch.bool, device=hidden.device)
    targets = torch.where(valid, 0, IGNORE_INDEX)
    scale = temperature ** 2 / valid.sum()
    return head_losses(hidden, weight, targets, chunk_tokens=chunk_tokens, lm_scale=None,
                       teacher_hidden=teacher_hidden, teacher_weight=teacher_weight, temperature=temperature,
                       kd_scale=scale).objective


# --- liger-kernel (optional; never a dependency) -------------------------------------------------

def _liger_function():
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except Exception:  # noqa: BLE001 - not installed, or built for another torch: the chunked path does the job
        return None
    return liger_fused_linear_cross_entropy


def _on_gpu(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda


def fused_cross_entropy(kernel: str, hidden: torch.Tensor):
    """liger's fused linear cross-entropy as ``f(hidden, weight, targets, ignore_index, reduction)``
    when ``kernel`` asks for it, it is installed and ``hidden`` is on a GPU; otherwise None."""
    if kernel not in KERNELS:
        raise ValueError(f"loss kernel must be one of {list(KERNELS)}, got {kernel!r}")
    if kernel != "liger" or not _on_gpu(hidden):
        return None
    function = _liger_function()
    if function is None:
        return None

    def fused(hidden, weight, targets, ignore_index, reduction):
        loss = function(hidden, weight, targets, ignore_index=ignore_index, reduction=reduction)
        return loss[0] if isinstance(loss, tuple) else loss  # some versions return (loss, z_loss)

    return fused


def chunk_memory_message(chunk_tokens: int, vocab_size: int, batch_tokens: int) -> str:
    """One line on what the chunk size means in memory, for the run's log."""
    chunk = chunk_tokens * vocab_size * 4
    whole = batch_tokens * vocab_size * 4
    return (f"loss head: logits in chunks of {chunk_tokens} tokens x {vocab_size} vocabulary = "
            f"{chunk / 2 ** 30:.2f} GiB per fp32 buffer (a micro-batch's {batch_tokens} tokens at once: "
            f"{whole / 2 ** 30:.2f} GiB per buffer); model.loss_chunk_tokens sets it")
