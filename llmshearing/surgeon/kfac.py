"""K-FAC factors of decoder-layer projections from calibration batches (empirical Fisher).

For each projection y = W a: A = E[a aᵀ] over its inputs and G = E[g gᵀ] over the gradients of the
summed next-token loss w.r.t. its outputs (the true next tokens: empirical Fisher), accumulated in
fp32 by hooks and averaged over tokens. Only the layers asked for hold factors, and the backward
pass starts at the first of them, so memory and work are bounded by the caller's block of layers.
"""
from __future__ import annotations

from typing import Dict, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.surgeon.curvature import DampedFactor, KroneckerCurvature
from llmshearing.surgeon.grads import trainable_only

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# projections that read another projection's input share its A factor
SHARED_INPUT = {"self_attn.k_proj": "self_attn.q_proj", "self_attn.v_proj": "self_attn.q_proj",
                "mlp.up_proj": "mlp.gate_proj"}


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


class _FactorHooks:
    """Forward hooks that add a aᵀ and g gᵀ of the chosen layers' projections into fp32 sums."""

    def __init__(self, model: LlamaForCausalLM, layers: Sequence[int]):
        self.sums: Dict[tuple, torch.Tensor] = {}
        self.handles = []
        for index in layers:
            layer = model.model.layers[index]
            for name in PROJECTIONS:
                hook = self._hook(index, name)
                self.handles.append(layer.get_submodule(name).register_forward_hook(hook))

    def _hook(self, index: int, name: str):
        def hook(module, inputs, output):
            if name not in SHARED_INPUT:
                self._add((index, "A", name), inputs[0])
            if output.requires_grad:
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


def estimate_factors(model: LlamaForCausalLM, batches: Iterable[torch.Tensor], layers: Sequence[int],
                     progress: bool = False) -> Dict[int, LayerFactors]:
    """K-FAC factors of ``layers`` (source layer indices) from one pass over ``batches``."""
    layers = sorted(layers)
    device = model.lm_head.weight.device
    hooks = _FactorHooks(model, layers)
    start = _backward_starts_at(model.model.layers[layers[0]])
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        with trainable_only(model):  # activation gradients only
            for batch in tqdm(list(batches), desc="  curvature", unit="batch", leave=False, disable=not progress):
                ids = batch.to(device)
                logits = model(ids)[:, :-1]
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1),
                                       reduction="sum")
                loss.backward()
                tokens += ids.numel()
    finally:
        hooks.remove()
        start.remove()
        model.train(was_training)
    factors = {}
    for index in layers:
        A = {name: hooks.sums.pop((index, "A", name)).div_(tokens) for name in PROJECTIONS if name not in SHARED_INPUT}
        G = {name: hooks.sums.pop((index, "G", name)).div_(tokens) for name in PROJECTIONS}
        factors[index] = LayerFactors(A, G)
    return factors
