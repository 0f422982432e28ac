"""K-FAC factors of decoder-layer projections from calibration batches (empirical Fisher).

For each projection y = W a: A = E[a aᵀ] over its inputs and G = E[g gᵀ] over the gradients of the
summed next-token loss w.r.t. its outputs (the true next tokens: empirical Fisher), accumulated in
fp32 by hooks and averaged over tokens. Only the layers asked for hold factors, and the backward
pass starts at the first of them, so memory and work are bounded by the caller's block of layers.
The loss comes from the model's chunked loss head (llmshearing/model/loss_head.py): the logits of
a batch exist one chunk of ``LOSS_CHUNK_TOKENS`` tokens at a time, never [batch, seq, vocab] in fp32
with its softmax and gradient (3 × 1.6 GB for a batch of 8 × 512 tokens of SmolLM2's 49k vocabulary).
Each calibration batch is run in micro-batches of whole sequences (``MICRO_BATCH_TOKENS`` tokens,
at least one sequence): the factors are sums over tokens, so this changes them only by float
summation order, while the activations kept for the backward pass (SmolLM2: ~1 MB per token over
its 30 layers, 4 GB for 8 × 512 tokens) shrink to a micro-batch's.

``sequential_input_factors`` is the forward-only alternative (``--curvature sequential``): the input
factors A layer after layer, from the activations that pass the already pruned layers before it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Dict, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.model.loss_head import head_losses
from llmshearing.surgeon.curvature import DampedFactor, KroneckerCurvature
from llmshearing.surgeon.grads import trainable_only

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# projections that read another projection's input share its A factor
SHARED_INPUT = {"self_attn.k_proj": "self_attn.q_proj", "self_attn.v_proj": "self_attn.q_proj",
                "mlp.up_proj": "mlp.gate_proj"}


LOSS_CHUNK_TOKENS = 512  # tokens whose logits exist at once in the curvature pass
MICRO_BATCH_TOKENS = 512  # tokens whose activations are held for one backward (whole sequences, at least one)


def summed_next_token_loss(model: LlamaForCausalLM, ids: torch.Tensor,
                           chunk_tokens: int = LOSS_CHUNK_TOKENS) -> torch.Tensor:
    """Σ next-token cross-entropy of ``ids`` (fp32), through the chunked loss head: no full logits."""
    def head(hidden, weight):
        return head_losses(hidden[:, :-1], weight, ids[:, 1:], chunk_tokens=chunk_tokens, lm_scale=1.0).objective
    return model(ids, head=head)


def input_owner(projection: str) -> str:
    return SHARED_INPUT.get(projection, projection)


class LayerFactors:
    """Token-averaged raw factors of one layer: ``A[owner]`` (see SHARED_INPUT) and ``G[projection]``."""

    def __init__(self, A: Dict[str, torch.Tensor], G: Dict[str, torch.Tensor]):
        self.A, self.G = A, G

    def curvatures(self, damping: float) -> Dict[str, KroneckerCurvature]:
        """Damped, inverted curvature per projection (one inversion per shared input)."""
        inputs = {owner: DampedFactor(a, damping) for owner, a in self.A.items()}
        return {name: KroneckerCurvature(inputs[input_owner(name)], DampedFactor(self.G[name], damping))
                for name in PROJECTIONS}


class BlockCurvatures(Mapping):
    """{layer: {projection: KroneckerCurvature}} of a block, made from the raw factors when a layer is
    first asked for (the raw factors are then dropped), so a caller that takes the layers one by one
    with ``pop`` holds one layer's damped factors and inverses at a time, not the block's."""

    def __init__(self, factors: Dict[int, LayerFactors], damping: float):
        self._raw, self._made, self.damping = dict(factors), {}, damping
        self._order = sorted(self._raw)

    def __getitem__(self, index: int):
        if index not in self._made:
            self._made[index] = self._raw.pop(index).curvatures(self.damping)
        return self._made[index]

    def pop(self, index: int, *default):
        if index not in self._raw and index not in self._made:
            if default:
                return default[0]
            raise KeyError(index)
        value = self[index]
        del self._made[index]
        self._order.remove(index)
        return value

    def __iter__(self):
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)


class _FactorHooks:
    """Forward hooks that add a aᵀ and g gᵀ of the chosen layers' projections into fp32 sums."""

    def __init__(self, model: LlamaForCausalLM, layers: Sequence[int], gradients: bool = True, inputs: bool = True):
        self.sums: Dict[tuple, torch.Tensor] = {}
        self.gradients, self.inputs = gradients, inputs
        self.handles = []
        for index in layers:
            layer = model.model.layers[index]
            for name in PROJECTIONS:
                hook = self._hook(index, name)
                self.handles.append(layer.get_submodule(name).register_forward_hook(hook))

    def _hook(self, index: int, name: str):
        def hook(module, inputs, output):
            if self.inputs and name not in SHARED_INPUT:
                self._add((index, "A", name), inputs[0])
            if self.gradients and output.requires_grad:
                output.register_hook(lambda grad: self._add((index, "G", name), grad))
        return hook

    @torch.no_grad()
    def _add(self, key, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        total = self.sums.get(key)
        if total is None:
            self.sums[key] = x.t() @ x
        else:
            total.addmm_(x.t(), x)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _backward_starts_at(layer: torch.nn.Module):
    """Make the hidden state entering ``layer`` a leaf that needs gradients: the backward pass stops there."""
    def pre_hook(module, args):
        return (args[0].detach().requires_grad_(True), *args[1:])
    return layer.register_forward_pre_hook(pre_hook)


def micro_batches(batch: torch.Tensor, tokens: int = MICRO_BATCH_TOKENS):
    """``batch`` [rows, seq] as consecutive pieces of whole rows, about ``tokens`` tokens each (≥ one row)."""
    return batch.split(max(1, tokens // max(batch.shape[1], 1)))


def estimate_factors(model: LlamaForCausalLM, batches: Iterable[torch.Tensor], layers: Sequence[int],
                     progress: bool = False, micro_batch_tokens: int = MICRO_BATCH_TOKENS,
                     inputs: bool = True) -> Dict[int, LayerFactors]:
    """K-FAC factors of ``layers`` (source layer indices) from one pass over ``batches`` (``inputs``
    False: the output factors G only, A left empty)."""
    layers = sorted(layers)
    device = model.lm_head.weight.device
    hooks = _FactorHooks(model, layers, inputs=inputs)
    start = _backward_starts_at(model.model.layers[layers[0]])
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        with trainable_only(model):  # activation gradients only
            for batch in tqdm(list(batches), desc="  curvature", unit="batch", leave=False, disable=not progress):
                for ids in micro_batches(batch.to(device), micro_batch_tokens):
                    summed_next_token_loss(model, ids).backward()
                    tokens += ids.numel()
    finally:
        hooks.remove()
        start.remove()
        model.train(was_training)
    factors = {}
    for index in layers:
        A = {name: hooks.sums.pop((index, "A", name)).div_(tokens) for name in PROJECTIONS
             if inputs and name not in SHARED_INPUT}
        G = {name: hooks.sums.pop((index, "G", name)).div_(tokens) for name in PROJECTIONS}
        factors[index] = LayerFactors(A, G)
    return factors


def output_scales(model: LlamaForCausalLM, batches: Sequence[torch.Tensor], damping: float,
                  progress: bool = False) -> Dict[int, Dict[str, torch.Tensor]]:
    """1 / [G⁻¹]_ii of every projection's damped output factor G (one forward + backward pass over
    ``batches``, G only): how much the loss cares about each output row, for row-scaled weight costs."""
    layers = range(model.config.num_hidden_layers)
    factors = estimate_factors(model, batches, layers, progress=progress, inputs=False)
    scales = {}
    for index in layers:
        G = factors.pop(index).G
        scales[index] = {name: 1.0 / DampedFactor(G.pop(name), damping).inverse.diagonal() for name in PROJECTIONS}
    return scales


class _StopForward(Exception):
    pass


@torch.no_grad()
def layer_inputs(model: LlamaForCausalLM, batches: Iterable[torch.Tensor],
                 micro_batch_tokens: int = MICRO_BATCH_TOKENS):
    """The hidden states entering layer 0 for every micro-batch of ``batches``, and each layer's other
    arguments (RoPE cos/sin, masks, index: the same for every micro-batch of one sequence length)."""
    device = model.lm_head.weight.device
    hidden, extra = [], {}

    def first(module, args):
        hidden.append(args[0])
        raise _StopForward

    def record(index):
        def hook(module, args):
            extra[index] = args[1:]
        return hook

    micro = [ids for batch in batches for ids in micro_batches(batch.to(device), micro_batch_tokens)]
    if len({ids.shape[1] for ids in micro}) > 1:
        raise ValueError("the calibration batches must have one sequence length")
    handles = [layer.register_forward_pre_hook(record(i)) for i, layer in enumerate(model.model.layers)]
    try:
        model(micro[0][:1])  # one sequence: every layer's RoPE tables and arguments
    finally:
        for handle in handles:
            handle.remove()
    handle = model.model.layers[0].register_forward_pre_hook(first)
    try:
        for ids in micro:
            try:
                model(ids)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return hidden, extra


def sequential_input_factors(model: LlamaForCausalLM, batches: Sequence[torch.Tensor],
                             prune_layer, progress: bool = False,
                             micro_batch_tokens: int = MICRO_BATCH_TOKENS) -> None:
    """Layer after layer, as SparseGPT calibrates: the input factors A of layer l's projections from the
    calibration activations that reach it through the layers before it, already pruned; then
    ``prune_layer(index, A)`` ({owner projection: A}, token-averaged raw sums) changes the layer, and its
    outputs (recomputed with the pruned weights) are the next layer's inputs. Forward passes only."""
    was_training = model.training
    model.eval()
    hidden, extra = layer_inputs(model, batches, micro_batch_tokens)
    tokens = sum(h.shape[0] * h.shape[1] for h in hidden)
    try:
        for index, layer in enumerate(tqdm(model.model.layers, desc="  layers", unit="layer", leave=False,
                                           disable=not progress)):
            hooks = _FactorHooks(model, [index], gradients=False)
            try:
                with torch.no_grad():
                    for h in hidden:
                        layer(h, *extra[index])
            finally:
                hooks.remove()
            prune_layer(index, {name: hooks.sums.pop((index, "A", name)).div_(tokens)
                                for name in PROJECTIONS if name not in SHARED_INPUT})
            with torch.no_grad():
                hidden = [layer(h, *extra[index]) for h in hidden]
    finally:
        model.train(was_training)
