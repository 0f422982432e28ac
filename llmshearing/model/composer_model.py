"""ComposerModel wrapper: next-token loss, LM metrics, and the optional L0 submodule's masks."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from composer.metrics.nlp import LanguageCrossEntropy, LanguagePerplexity
from composer.models import ComposerModel

from llmshearing.errors import CheckpointError
from llmshearing.model.config import LlamaConfig
from llmshearing.model.llama import DecoderLayer, LlamaForCausalLM

IGNORE_INDEX = -100


def is_decoder_layer(module) -> bool:
    return isinstance(module, DecoderLayer)


def next_token_targets(batch) -> torch.Tensor:
    """Targets aligned with logits[:, :-1]."""
    labels = batch.get("labels", batch["input_ids"])
    return labels[:, 1:].contiguous()


class ComposerLlama(ComposerModel):
    """Holds the LLaMA model as ``self.model``; an L0 module, when attached, lives at ``self.l0``.

    The model config is saved in every state dict (``_extra_state``) so any checkpoint says what
    shape it holds, and loading a checkpoint of another shape fails with a clear message.
    """

    def __init__(self, config: LlamaConfig, init_weights: bool = True, model: Optional[LlamaForCausalLM] = None):
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
        self.train_metrics = {"LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=IGNORE_INDEX)}
        self.eval_metrics = {
            "LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=IGNORE_INDEX),
            "LanguagePerplexity": LanguagePerplexity(ignore_index=IGNORE_INDEX),
        }

    @property
    def config(self) -> LlamaConfig:
        return self.model.config

    def current_masks(self):
        return self.l0() if self.l0 is not None else None

    def forward(self, batch) -> torch.Tensor:
        return self.model(batch["input_ids"], self.current_masks())

    def loss(self, outputs, batch, *args, **kwargs) -> torch.Tensor:
        logits = outputs[:, :-1]
        targets = next_token_targets(batch)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX
        )

    def eval_forward(self, batch, outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def update_metric(self, batch, outputs, metric) -> None:
        metric.update(outputs[:, :-1].contiguous().float(), next_token_targets(batch))

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
