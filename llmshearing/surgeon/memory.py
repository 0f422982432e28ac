"""Up-front memory estimate of a surgeon run and the split of layers into blocks that fit a budget.

Per layer the factors are A for the four distinct projection inputs (q/k/v share one, gate/up share
one) and G for the seven projection outputs, summed in fp32 during the curvature pass; damped and
inverted (2× the raw size) when a layer is scored or pruned. A block of layers is estimated in one
pass over the calibration data; more blocks mean more passes, not more memory.

``PeakEstimate`` adds up what a run holds at its peak on top of the process's memory when pruning
starts (the model and libraries): the factors it keeps (allocation ``matrix``: the block's raw sums
and one layer's inverses; the global selection: the inverses of every layer of the block), the
activations one micro-batch keeps for the backward pass (measured on a one-layer copy of the model
with the real sizes: ``saved_bytes_per_token``), the loss head's chunk of logits, and the global
selection's per-weight costs, keys and masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from llmshearing.model.config import LlamaConfig

FP32_BYTES = 4
GB = 1024 ** 3
DEFAULT_BUDGET_FRACTION = 0.5  # of the memory available when pruning starts


def factor_elements_per_layer(config: LlamaConfig) -> int:
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    inputs = d * d + q * q + d * d + f * f  # attention input, o_proj input, MLP input, down_proj input
    outputs = q * q + 2 * kv * kv + d * d + 2 * f * f + d * d  # q, k, v, o, gate, up, down
    return inputs + outputs


def factor_bytes_per_layer(config: LlamaConfig) -> int:
    return 2 * FP32_BYTES * factor_elements_per_layer(config)  # each factor and its inverse


def prunable_weights(config: LlamaConfig) -> int:
    from llmshearing.surgeon.units import projection_sizes

    return sum(projection_sizes(config).values()) * config.num_hidden_layers


def _saved_bytes(config: LlamaConfig, layers: int, seq_len: int) -> int:
    """Bytes kept for the backward pass by a ``layers``-layer model with the config's sizes (and a tiny
    vocabulary) on one random sequence, gradients starting at the first layer's input, weights frozen."""
    import dataclasses

    from llmshearing.model.llama import LlamaForCausalLM
    from llmshearing.surgeon.grads import trainable_only

    small = dataclasses.replace(config.with_layers([0] * layers), vocab_size=8, tie_word_embeddings=False)
    model = LlamaForCausalLM(small).eval()
    storages = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}  # saved weights are the model's own

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    hidden = torch.randn(1, seq_len, config.hidden_size, requires_grad=True)
    pre = model.model.layers[0].register_forward_pre_hook(lambda module, args: (hidden, *args[1:]))
    try:
        with trainable_only(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(torch.zeros(1, seq_len, dtype=torch.long))
    finally:
        pre.remove()
    storages.pop(hidden.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def saved_bytes_per_token(config: LlamaConfig, seq_len: int):
    """(bytes per token per decoder layer, bytes per token once) that the curvature pass keeps for its
    backward pass with ``seq_len`` sequences: measured on one- and two-layer models with the config's
    sizes, so whatever the model code saves (norms, RoPE, attention kernel, MLP) is counted."""
    one, two = _saved_bytes(config, 1, seq_len), _saved_bytes(config, 2, seq_len)
    per_layer = -(-(two - one) // seq_len)
    return per_layer, max(0, -(-(one // seq_len)) - per_layer)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass
class FactorBudget:
    per_layer: int
    layers: int
    budget: int
    available: int

    @property
    def layers_per_block(self) -> int:
        return max(1, min(self.layers, self.budget // max(self.per_layer, 1)))

    def blocks(self, layer_indices: List[int]) -> List[List[int]]:
        size = self.layers_per_block
        return [layer_indices[i:i + size] for i in range(0, len(layer_indices), size)]

    def describe(self) -> str:
        passes = -(-self.layers // self.layers_per_block)
        return (f"K-FAC factors held: {self.per_layer / GB:.2f} GB per layer, {self.per_layer * self.layers / GB:.2f} GB "
                f"for all {self.layers} layers; budget {self.budget / GB:.2f} GB of {self.available / GB:.2f} GB "
                f"available -> {self.layers_per_block} layers per block, {passes} curvature pass(es) per estimate")

    def warning(self) -> Optional[str]:
        if self.per_layer > self.available:
            return (f"warning: one layer's K-FAC factors need {self.per_layer / GB:.2f} GB but only "
                    f"{self.available / GB:.2f} GB are available; expect an out-of-memory error")
        return None


def factor_budget(config: LlamaConfig, device: torch.device, budget_gb: Optional[float] = None,
                  keeps_inverses: bool = True) -> FactorBudget:
    """``keeps_inverses``: a block's layers hold their inverses together (the global selection); else
    only the raw sums (each layer's inverses are made and freed as it is pruned)."""
    available = available_bytes(device)
    budget = int(budget_gb * GB) if budget_gb is not None else int(available * DEFAULT_BUDGET_FRACTION)
    per_layer = factor_bytes_per_layer(config) // (1 if keeps_inverses else 2)
    return FactorBudget(per_layer, config.num_hidden_layers, budget, available)


HEAD_BUFFERS = 3  # [chunk, vocab] fp32 buffers of the loss head alive at once (logits, softmax, gradient)
GLOBAL_SELECTION_BYTES = {"unstructured": 10, "2:4": 15}  # per prunable weight: costs, keys, masks (2:4: candidates)
ALLOCATOR_SLACK = 1.10  # freed blocks the allocator keeps, fragmentation


@dataclass
class PeakEstimate:
    start: int  # the process's memory when pruning starts (model, libraries, calibration data)
    factors: int
    activations: int
    head: int
    selection: int

    @property
    def total(self) -> int:
        return self.start + int(ALLOCATOR_SLACK * (self.factors + self.activations + self.head + self.selection))

    def describe(self) -> str:
        return (f"peak memory estimate: {self.total / GB:.2f} GB = {self.start / GB:.2f} GB now + "
                f"{self.factors / GB:.2f} GB factors + {self.activations / GB:.2f} GB activations + "
                f"{self.head / GB:.2f} GB loss head + {self.selection / GB:.2f} GB selection (+10 % allocator)")


def input_factor_elements(config: LlamaConfig) -> int:
    d, f, q = config.hidden_size, config.intermediate_size, config.num_attention_heads * config.head_dim
    return d * d + q * q + d * d + f * f


def output_elements(config: LlamaConfig) -> int:
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    return q * q + 2 * kv * kv + d * d + 2 * f * f + d * d


def sequential_estimate(config: LlamaConfig, *, start: int, seq_len: int, micro_batch_tokens: int,
                        calibration_tokens: int, row_scaled: bool = False,
                        loss_chunk_tokens: int = 512) -> PeakEstimate:
    """The larger of the sequential pass's peak and (``row_scaled``) the output-factor pass's: G of every
    layer summed over one forward + backward pass (micro-batch activations, the loss head's chunk)."""
    forward_only = _sequential_pass(config, start=start, seq_len=seq_len, micro_batch_tokens=micro_batch_tokens,
                                    calibration_tokens=calibration_tokens)
    if not row_scaled:
        return forward_only
    tokens = max(seq_len, micro_batch_tokens // max(seq_len, 1) * seq_len)
    per_layer_token, once_token = saved_bytes_per_token(config, seq_len)
    layers = config.num_hidden_layers
    f = config.intermediate_size
    factors = FP32_BYTES * (output_elements(config) * layers + 2 * f * f)  # all G sums, one damped G + inverse
    activations = (per_layer_token * layers + once_token) * tokens
    head = HEAD_BUFFERS * FP32_BYTES * min(loss_chunk_tokens, tokens) * config.vocab_size
    output_pass = PeakEstimate(start, factors, activations, head, 0)
    return max(forward_only, output_pass, key=lambda estimate: estimate.total)


def _sequential_pass(config: LlamaConfig, *, start: int, seq_len: int, micro_batch_tokens: int,
                     calibration_tokens: int) -> PeakEstimate:
    """``--curvature sequential``: one layer's input factors (raw, damped, inverse) and G = I per
    projection; the calibration set's hidden states entering the layer and leaving it; a micro-batch's
    forward through one layer (no gradients) and one sequence's logits (the RoPE tables' forward)."""
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    factors = FP32_BYTES * (3 * input_factor_elements(config) + 2 * output_elements(config))
    tokens = max(seq_len, micro_batch_tokens // max(seq_len, 1) * seq_len)
    hidden = 2 * FP32_BYTES * calibration_tokens * d
    forward = FP32_BYTES * tokens * (4 * f + 6 * d + 2 * q)
    head = FP32_BYTES * seq_len * config.vocab_size
    return PeakEstimate(start, factors, hidden + forward, head, 0)


def peak_estimate(config: LlamaConfig, *, start: int, layers_per_block: int, seq_len: int, micro_batch_tokens: int,
                  loss_chunk_tokens: int, mode: str, global_selection: bool, curvature: bool = True) -> PeakEstimate:
    """What a surgeon run holds at its peak (see the module's doc); ``start`` is measured by the caller."""
    per_layer = factor_bytes_per_layer(config)  # a layer's factors and inverses (2× the raw sums)
    if not curvature:
        factors = 0
    elif global_selection:  # the block's inverses stay for the update; one layer's raw sums go as it is made
        factors = per_layer * layers_per_block + per_layer // 2
    else:  # the block's raw sums; one layer's damped factors and inverses (+ its raw sums, until made)
        factors = per_layer // 2 * layers_per_block + per_layer
    tokens = max(seq_len, micro_batch_tokens // max(seq_len, 1) * seq_len)
    per_layer_token, once_token = saved_bytes_per_token(config, seq_len) if curvature else (0, 0)
    activations = (per_layer_token * layers_per_block + once_token) * tokens
    head = HEAD_BUFFERS * FP32_BYTES * min(loss_chunk_tokens, tokens) * config.vocab_size if curvature else 0
    selection = GLOBAL_SELECTION_BYTES.get(mode, 0) * prunable_weights(config) if global_selection else 0
    return PeakEstimate(start, factors, activations, head, selection)


def process_bytes(device: torch.device) -> int:
    """Memory the process holds now: CUDA allocated bytes, or the resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    import psutil

    return int(psutil.Process().memory_info().rss)
