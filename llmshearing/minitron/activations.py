"""One forward-only pass over calibration batches with hooks on the model, scoring:

- attention heads: L2 norm of each head's output (the ``o_proj`` input, head_dim values per head);
- MLP neurons: magnitude of each ``down_proj`` input;
- embedding channels: magnitude of every hidden-size RMSNorm output (the norms of each scored layer:
  both of a pre-norm layer, all four of a layer with sandwich norms (Gemma); and the final norm), each
  norm reduced on its own, then summed over the norms;
- Block Importance per layer: 1 - cos(h_in, h_out), averaged over all tokens.

Per-token values are reduced over the sequence, then over samples (``aggregation``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from llmshearing.minitron.aggregation import SampleAccumulator, reduce_sequence
from llmshearing.model.llama import LlamaForCausalLM


# <name>_layernorm modules of a decoder layer (pre_/post_feedforward only with sandwich norms)
LAYER_NORMS = ("input", "post_attention", "pre_feedforward", "post_feedforward")


@dataclass
class ActivationScores:
    hidden: torch.Tensor  # [d_model]
    heads: torch.Tensor  # [L, n_heads], NaN rows for layers not scored
    neurons: torch.Tensor  # [L, d_ff]
    block_importance: torch.Tensor  # [L]


class _TokenMean:
    """Mean of per-token values over every token seen."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor) -> None:
        self.total += float(values.double().sum())
        self.count += values.numel()

    def result(self) -> float:
        return self.total / self.count


class ActivationRecorder:
    """Hooks that record activation statistics of ``layers`` (source indices) while active."""

    def __init__(self, model: LlamaForCausalLM, layers: Sequence[int], sequence: str, batch: str):
        self.model = model
        self.layers = list(layers)
        self.sequence, self.batch = sequence, batch
        self.heads = {i: SampleAccumulator() for i in self.layers}
        self.neurons = {i: SampleAccumulator() for i in self.layers}
        self.norms = {}
        self.block = {i: _TokenMean() for i in self.layers}
        self._handles = []

    def __enter__(self) -> "ActivationRecorder":
        config = self.model.config
        for i in self.layers:
            layer = self.model.model.layers[i]
            self._pre_hook(layer.self_attn.o_proj, self._record_heads(i, config.num_attention_heads))
            self._pre_hook(layer.mlp.down_proj, self._record_units(self.neurons[i]))
            for name in LAYER_NORMS:  # the hidden-size norms this layer has
                if hasattr(layer, f"{name}_layernorm"):
                    self._norm_hook(f"{i}.{name}", getattr(layer, f"{name}_layernorm"))
            self._handles.append(layer.register_forward_hook(self._record_block(i)))
        self._norm_hook("final", self.model.model.norm)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # ---- hooks ------------------------------------------------------------------------------
    def _pre_hook(self, module, record) -> None:
        self._handles.append(module.register_forward_pre_hook(lambda _m, args: record(args[0])))

    def _norm_hook(self, name: str, norm) -> None:
        self.norms[name] = SampleAccumulator()
        record = self._record_units(self.norms[name])
        self._handles.append(norm.register_forward_hook(lambda _m, _args, out: record(out)))

    def _record_units(self, accumulator: SampleAccumulator):
        def record(values: torch.Tensor) -> None:
            accumulator.add(reduce_sequence(values.abs(), self.sequence))
        return record

    def _record_heads(self, index: int, num_heads: int):
        def record(values: torch.Tensor) -> None:
            batch, seq, _ = values.shape
            per_head = values.float().view(batch, seq, num_heads, -1).norm(dim=-1)
            self.heads[index].add(reduce_sequence(per_head, self.sequence))
        return record

    def _record_block(self, index: int):
        def record(_module, args, output) -> None:
            self.block[index].add(1.0 - F.cosine_similarity(args[0].float(), output.float(), dim=-1))
        return record

    # ---- results ----------------------------------------------------------------------------
    def result(self) -> ActivationScores:
        config = self.model.config
        layers = config.num_hidden_layers
        heads = torch.full((layers, config.num_attention_heads), float("nan"))
        neurons = torch.full((layers, config.intermediate_size), float("nan"))
        block = torch.full((layers,), float("nan"))
        for i in self.layers:
            heads[i] = self.heads[i].result(self.batch)
            neurons[i] = self.neurons[i].result(self.batch)
            block[i] = self.block[i].result()
        hidden = sum(norm.result(self.batch) for norm in self.norms.values())
        return ActivationScores(hidden, heads, neurons, block)


@torch.no_grad()
def record_activations(
    model: LlamaForCausalLM,
    batches: Iterable[torch.Tensor],
    *,
    sequence: str = "mean",
    batch: str = "l2",
    layers: Optional[Sequence[int]] = None,
    masks: Optional[dict] = None,
) -> ActivationScores:
    """Activation scores of ``layers`` (default: all) over ``batches``, optionally under ``masks``."""
    device = next(model.parameters()).device
    layers = range(model.config.num_hidden_layers) if layers is None else layers
    masks = None if masks is None else {k: v.to(device) for k, v in masks.items()}
    was_training = model.training
    model.eval()
    with ActivationRecorder(model, layers, sequence, batch) as recorder:
        for ids in batches:
            model(ids.to(device), masks)
    model.train(was_training)
    return recorder.result()
