"""The model's loss computed inside its forward pass: ``LlamaForCausalLM.forward(ids, masks, head=...)``
hands the final hidden states and the lm_head weight to a head, which returns a
:class:`LossHeadOutput` instead of logits.

Inside the forward is where the weight may be read under FSDP (1 and 2: the wrapped module holds it
unsharded there), and where no [batch, seq, vocab] tensor has to exist. ``ComposerLlama`` trains and
evaluates through :class:`NextTokenLoss` (or the distillation head), the per-domain perplexity too;
everything else calling the model (generation, importance, curvature, export) still gets logits.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from llmshearing.model.loss_head import DEFAULT_CHUNK_TOKENS, IGNORE_INDEX, fused_cross_entropy, head_losses


class LossHeadOutput(NamedTuple):
    """A forward pass's losses (a NamedTuple so FSDP and DDP find the tensors in it)."""

    objective: torch.Tensor  # the scalar training minimises: the mean next-token loss, or the distillation mix
    nll_sum: torch.Tensor  # Σ next-token loss over the scored tokens (no gradient)
    tokens: torch.Tensor  # number of scored (non-ignored) tokens
    token_nll: Optional[torch.Tensor]  # [batch, seq - 1] per-token loss, 0 where ignored; None from a fused kernel
    kd: Optional[torch.Tensor] = None  # T² · mean KL(teacher ‖ student) (no gradient), from a distillation head

    @property
    def lm_loss(self) -> torch.Tensor:
        """The mean next-token loss (no gradient)."""
        return self.nll_sum / self.tokens


class NextTokenLoss:
    """Head for ``LlamaForCausalLM.forward``: the mean next-token cross-entropy of position t's hidden
    state against ``targets[:, t]`` (``targets`` is [batch, seq - 1], IGNORE_INDEX where unscored)."""

    def __init__(self, targets: torch.Tensor, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, kernel: str = "torch",
                 ignore_index: int = IGNORE_INDEX):
        self.targets = targets
        self.chunk_tokens = chunk_tokens
        self.kernel = kernel
        self.ignore_index = ignore_index

    def __call__(self, hidden: torch.Tensor, weight: torch.Tensor) -> LossHeadOutput:
        hidden = hidden[:, :-1]
        targets = self.targets.to(hidden.device)
        tokens = (targets != self.ignore_index).sum()
        fused = fused_cross_entropy(self.kernel, hidden) if torch.is_grad_enabled() else None
        if fused is not None:
            objective = fused(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1),
                              ignore_index=self.ignore_index, reduction="mean")
            return LossHeadOutput(objective, objective.detach() * tokens, tokens, None)
        losses = head_losses(hidden, weight, targets, chunk_tokens=self.chunk_tokens,
                             ignore_index=self.ignore_index, lm_scale=1.0 / tokens)
        token_nll = losses.token_nll.view(targets.shape)
        return LossHeadOutput(losses.objective, token_nll.sum(), tokens, token_nll)
