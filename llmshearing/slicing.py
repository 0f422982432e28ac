"""slice(model, plan): the one slicer. Returns a dense, smaller LlamaForCausalLM with a valid config
of the source's family (biases, q/k norms and attention types go with their heads and layers).

A plan that keeps the same sizes in every layer gives a plain LLaMA config; otherwise the config
carries per-layer sizes (``LlamaConfig.intermediate_sizes`` etc.) and each layer is sliced to its own.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Sequence

import torch

from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.errors import ShapeError
from llmshearing.plan import LayerPlan, PruningPlan
from llmshearing.shape import TargetShape


def _index(indices: Sequence[int], device) -> torch.Tensor:
    return torch.as_tensor(list(indices), dtype=torch.long, device=device)


def _scale_vector(scale: Optional[Sequence[float]], size: int, like: torch.Tensor) -> torch.Tensor:
    if scale is None:
        return torch.ones(size, dtype=torch.float32, device=like.device)
    return torch.as_tensor(scale, dtype=torch.float32, device=like.device)


def _rows(weight: torch.Tensor, indices: torch.Tensor, block: int = 1) -> torch.Tensor:
    """Select output rows, in blocks of ``block`` rows per unit (a head is head_dim rows)."""
    if block == 1:
        return weight.index_select(0, indices)
    blocks = weight.view(-1, block, weight.shape[1]).index_select(0, indices)
    return blocks.reshape(-1, weight.shape[1])


def _head_columns(weight: torch.Tensor, heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    out_features = weight.shape[0]
    blocks = weight.view(out_features, -1, head_dim).index_select(1, heads)
    return blocks.reshape(out_features, -1)


def _copy_norm(dst, src, hidden: torch.Tensor, factor: Optional[torch.Tensor] = None) -> None:
    """The kept channels of an RMSNorm, with ``factor`` folded into its per-channel scale (for a Gemma
    norm, which multiplies by 1 + weight, the stored weight is that scale minus one)."""
    scale = src.scale().index_select(0, hidden).float()
    if factor is not None:
        scale = scale * factor
    dst.weight.copy_(scale - 1.0 if dst.plus_one else scale)


@contextlib.contextmanager
def _replaced_weights(model: LlamaForCausalLM, weights: Optional[Dict[str, torch.Tensor]]):
    """The model's parameters temporarily hold the plan's replacement weights (restored afterwards)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    saved = {}
    try:
        for name, tensor in (weights or {}).items():
            if name not in params:
                raise ShapeError(f"the pruning plan replaces {name}, which the model does not have")
            if tuple(tensor.shape) != tuple(params[name].shape):
                raise ShapeError(f"the pruning plan's {name} has shape {tuple(tensor.shape)}, "
                                 f"the model's {tuple(params[name].shape)}")
            saved[name] = params[name].data
            params[name].data = tensor.to(device=saved[name].device, dtype=saved[name].dtype)
        yield model
    finally:
        for name, data in saved.items():
            params[name].data = data


@torch.no_grad()
def slice_model(model: LlamaForCausalLM, plan: PruningPlan) -> LlamaForCausalLM:
    plan.validate()
    source = model.config
    source.require_uniform("slicing")
    if TargetShape.of(source) != TargetShape.of(plan.source) or source.vocab_size != plan.source.vocab_size:
        raise ShapeError(
            f"the pruning plan was made for a model of shape {TargetShape.of(plan.source).to_dict()}, "
            f"not {TargetShape.of(source).to_dict()}"
        )
    with _replaced_weights(model, plan.replacement_weights):
        return _slice(model, plan)


def _slice(model: LlamaForCausalLM, plan: PruningPlan) -> LlamaForCausalLM:
    source = model.config
    target_config = plan.target_config()
    device = model.lm_head.weight.device
    dtype = model.lm_head.weight.dtype
    hidden = _index(plan.kept_hidden, device)
    hidden_scale = _scale_vector(plan.hidden_scale, len(plan.kept_hidden), model.lm_head.weight)

    sliced = LlamaForCausalLM.empty(target_config, device=device, dtype=dtype)
    src, dst = model.model, sliced.model
    embed = src.embed_tokens.weight.index_select(1, hidden).float() * hidden_scale
    final_norm_factor = None
    if source.scale_embeddings:
        # Gemma multiplies the embeddings by √hidden_size, a smaller number in the sliced model; the ratio goes
        # into the table, and, when the table is also lm_head, back out of the final norm
        ratio = (source.hidden_size / target_config.hidden_size) ** 0.5
        embed = embed * ratio
        if target_config.tie_word_embeddings:
            final_norm_factor = torch.full_like(hidden_scale, 1.0 / ratio)
    dst.embed_tokens.weight.copy_(embed)
    _copy_norm(dst.norm, src.norm, hidden, final_norm_factor)
    if not target_config.tie_word_embeddings:
        # the masked model scales lm_head's input by hidden_z once; fold that scale in once
        sliced.lm_head.weight.copy_(model.lm_head.weight.index_select(1, hidden).float() * hidden_scale)
    for new_layer, layer_plan in zip(dst.layers, plan.layers):
        _slice_layer(src.layers[layer_plan.source_index], new_layer, layer_plan, hidden, hidden_scale, source.head_dim)
    return sliced


def _slice_layer(src, dst, plan: LayerPlan, hidden, hidden_scale, head_dim):
    device = hidden.device
    heads = _index(plan.kept_heads, device)
    kv_heads = _index(plan.kept_kv_heads, device)
    neurons = _index(plan.kept_neurons, device)
    head_scale = _scale_vector(plan.head_scale, len(plan.kept_heads), hidden_scale)
    neuron_scale = _scale_vector(plan.neuron_scale, len(plan.kept_neurons), hidden_scale)

    _copy_norm(dst.input_layernorm, src.input_layernorm, hidden)
    # the masked model scales each block's output by its masks; with Gemma's output norms that scale goes into
    # the output norm (a norm would undo it before), else into o_proj / down_proj
    sandwich = src.sandwich
    attn_out = hidden_scale * plan.attn_scale
    mlp_out = hidden_scale * plan.mlp_scale
    if sandwich:
        _copy_norm(dst.post_attention_layernorm, src.post_attention_layernorm, hidden, attn_out)
        _copy_norm(dst.pre_feedforward_layernorm, src.pre_feedforward_layernorm, hidden)
        _copy_norm(dst.post_feedforward_layernorm, src.post_feedforward_layernorm, hidden, mlp_out)
        attn_out = mlp_out = hidden_scale  # the output norms' inputs carry the hidden mask only
    else:
        _copy_norm(dst.post_attention_layernorm, src.post_attention_layernorm, hidden)

    attn_src, attn_dst = src.self_attn, dst.self_attn
    for name, kept in (("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads)):
        source, target = getattr(attn_src, name), getattr(attn_dst, name)
        target.weight.copy_(_rows(source.weight, kept, head_dim).index_select(1, hidden))
        if source.bias is not None:  # Qwen: one bias per output row, kept with its head
            target.bias.copy_(_rows(source.bias[:, None], kept, head_dim)[:, 0])
    for name in ("q_norm", "k_norm"):  # over head_dim, shared by the heads: kept whole
        if hasattr(attn_src, name):
            getattr(attn_dst, name).weight.copy_(getattr(attn_src, name).weight)
    o_proj = _head_columns(attn_src.o_proj.weight.index_select(0, hidden), heads, head_dim).float()
    o_proj = o_proj * head_scale.repeat_interleave(head_dim)[None, :]
    attn_dst.o_proj.weight.copy_(o_proj * attn_out[:, None])
    if attn_src.o_proj.bias is not None:  # the masked model scales the block's whole output, bias included
        attn_dst.o_proj.bias.copy_(attn_src.o_proj.bias.index_select(0, hidden).float() * attn_out)

    mlp_src, mlp_dst = src.mlp, dst.mlp
    mlp_dst.gate_proj.weight.copy_(mlp_src.gate_proj.weight.index_select(0, neurons).index_select(1, hidden))
    mlp_dst.up_proj.weight.copy_(mlp_src.up_proj.weight.index_select(0, neurons).index_select(1, hidden))
    down = mlp_src.down_proj.weight.index_select(0, hidden).index_select(1, neurons).float()
    mlp_dst.down_proj.weight.copy_(down * neuron_scale[None, :] * mlp_out[:, None])
