"""ComposerModel wrapper: next-token loss, LM metrics, and the optional L0 submodule's masks.

The training forward (train mode) and ``eval_forward`` end in a loss head (model/next_token_loss.py):
they return a ``LossHeadOutput`` (the loss, its sum and token count, per-token losses) computed from
the final hidden states ``loss_chunk_tokens`` tokens at a time, never the micro-batch's logits. In
eval mode ``forward`` returns the logits; with ``loss_chunk_tokens=0`` it always does, and the loss
and metrics use them, as before.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
from composer.models import ComposerModel

from llmshearing.errors import CheckpointError
from llmshearing.model.config import LlamaConfig
from llmshearing.model.llama import DecoderLayer, LlamaForCausalLM
from llmshearing.model.loss_head import DEFAULT_CHUNK_TOKENS, IGNORE_INDEX, chunk_memory_message
from llmshearing.model.next_token_loss import LossHeadOutput, NextTokenLoss

log = logging.getLogger(__name__)


def is_decoder_layer(module) -> bool:
    return isinstance(module, DecoderLayer)


def next_token_targets(batch) -> torch.Tensor:
    """Targets aligned with logits[:, :-1]."""
    labels = batch.get("labels", batch["input_ids"])
    return labels[:, 1:].contiguous()


class _SummedLossUpdate:
    """Composer's LM metrics, also updated from a ``LossHeadOutput`` (its loss sum and token count:
    the same ``sum_loss`` / ``total_items`` states the logits would give)."""

    def update(self, output, target) -> None:
        if isinstance(output, LossHeadOutput):
            self.sum_loss += output.nll_sum.detach().to(self.sum_loss.dtype)
            self.total_items += output.tokens.to(self.total_items.dtype)
        else:
            super().update(output, target)


class StreamedCrossEntropy(_SummedLossUpdate, LanguageCrossEntropy):
    pass


class StreamedPerplexity(_SummedLossUpdate, LanguagePerplexity):
    pass


class ComposerLlama(ComposerModel):
    """Holds the LLaMA model as ``self.model``; an L0 module, when attached, lives at ``self.l0``.

    The model config is saved in every state dict (``_extra_state``) so any checkpoint says what
    shape it holds, and loading a checkpoint of another shape fails with a clear message.
    """

    def __init__(self, config: LlamaConfig, init_weights: bool = True, model: Optional[LlamaForCausalLM] = None,
                 loss_chunk_tokens: int = DEFAULT_CHUNK_TOKENS, loss_kernel: str = "torch"):
        super().__init__()
        if model is not None:  # wrap an existing model (no copy)
            self.model = model
        else:  # loaders that overwrite every weight skip the (slow, memory-hungry) random init
            self.model = LlamaForCausalLM(config) if init_weights else LlamaForCausalLM.empty(config)
        self.l0: Optional[torch.nn.Module] = None
        # Composer's FSDP (v1) wraps each child of a ComposerModel on its own and asks that *child*
        # which submodules become FSDP units / activation-checkpointed blocks: one per decoder layer.
        # (FSDP2 asks this module's fsdp_wrap_fn below.) Children added later (the L0 masks, the
        # distillation projections) set ``_fsdp_wrap = False``: see llmshearing/composer/distributed.py.
        self.model.fsdp_wrap_fn = is_decoder_layer
        self.model.activation_checkpointing_fn = is_decoder_layer
        self.loss_chunk_tokens = loss_chunk_tokens  # 0: the forward returns logits (the unchunked loss)
        self.loss_kernel = loss_kernel
        # set by the Distillation algorithm: (input_ids, targets, chunk_tokens) -> the head of a training step
        self.distillation_head: Optional[Callable] = None
        self._chunk_memory_logged = False
        self.train_metrics = {"LanguageCrossEntropy": StreamedCrossEntropy(ignore_index=IGNORE_INDEX)}
        self.eval_metrics = {
            "LanguageCrossEntropy": StreamedCrossEntropy(ignore_index=IGNORE_INDEX),
            "LanguagePerplexity": StreamedPerplexity(ignore_index=IGNORE_INDEX),
        }

    @classmethod
    def wrapping(cls, model: LlamaForCausalLM) -> "ComposerLlama":
        """The training wrapper around a loaded model (no copy)."""
        return cls(model.config, model=model)

    @property
    def config(self) -> LlamaConfig:
        return self.model.config

    def current_masks(self):
        return self.l0() if self.l0 is not None else None

    def forward(self, batch, streamed: Optional[bool] = None):
        """A ``LossHeadOutput`` in train mode (Composer's training forward) or with ``streamed``; the
        logits of the (masked) model in eval mode, and always with ``loss_chunk_tokens`` 0."""
        if streamed is None:
            streamed = self.training
        if not (streamed and self.loss_chunk_tokens):
            return self.model(batch["input_ids"], self.current_masks())
        return self.model(batch["input_ids"], self.current_masks(), head=self._loss_head(batch))

    def _loss_head(self, batch):
        targets = next_token_targets(batch)
        if not self._chunk_memory_logged:
            self._chunk_memory_logged = True
            log.info(chunk_memory_message(self.loss_chunk_tokens, self.config.vocab_size, targets.numel()))
        # the teacher runs only for a step that trains (not for the no-grad loss measurements of dynamic loading)
        if self.distillation_head is not None and self.training and torch.is_grad_enabled():
            return self.distillation_head(batch["input_ids"], targets, self.loss_chunk_tokens)
        return NextTokenLoss(targets, self.loss_chunk_tokens, self.loss_kernel)

    def loss(self, outputs, batch, *args, **kwargs) -> torch.Tensor:
        if isinstance(outputs, LossHeadOutput):
            return outputs.objective
        logits = outputs[:, :-1]
        targets = next_token_targets(batch)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def eval_forward(self, batch, outputs=None):
        # through __call__, so that a root FSDP2 module gathers its parameters as for training
        return outputs if outputs is not None else self(batch, streamed=True)

    def update_metric(self, batch, outputs, metric) -> None:
        if not isinstance(outputs, LossHeadOutput):
            outputs = outputs[:, :-1].contiguous().float()
        metric.update(outputs, next_token_targets(batch))

    def get_metrics(self, is_train: bool = False):
        return self.train_metrics if is_train else self.eval_metrics

    def fsdp_wrap_fn(self, module) -> bool:
        return is_decoder_layer(module)

    def activation_checkpointing_fn(self, module) -> bool:
        return is_decoder_layer(module)

    def get_extra_state(self):
        return {"model_config": self.config.to_dict()}

    def set_extra_state(self, state) -> None:
        if not state or "model_config" not in state:
            return
        saved = LlamaConfig.from_dict(state["model_config"]).to_dict()
        ours = self.config.to_dict()
        differing = {k: (saved[k], ours[k]) for k in saved if k != "attn_impl" and saved[k] != ours.get(k)}
        if differing:
            details = ", ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in
                                ((k, *v) for k, v in differing.items()))
            raise CheckpointError(f"checkpoint holds a model of another shape ({details})")
