"""Write a transformers causal LM as an F32 GGUF file the way llama.cpp's convert_hf_to_gguf.py lays it out.

For tests only: a tiny random model of a family becomes a GGUF that transformers' GGUF loader (and so ours)
reads back exactly. What llama.cpp's converter does that a reader has to undo, done here the same way:

- ``llama`` / ``mistral`` (both GGUF architecture ``llama``): the rows of q_proj and k_proj (weights and
  biases) are permuted from HF's rotate-half RoPE layout to llama.cpp's interleaved one
  (``LlamaModel.permute``); transformers' ``LlamaTensorProcessor`` reverses it. ``head_dim`` travels as
  ``llama.rope.dimension_count``. transformers reads a ``llama`` GGUF as Mistral only when ``general.name`` is
  exactly ``"mistral"`` (a list-membership test on ``general.name``); llama.cpp writes the model card's name
  (``"Mistral 7B v0.1"``), so a real Mistral GGUF loads as ``LlamaForCausalLM`` (see ``write_gguf``'s ``name``).
- ``qwen2`` / ``qwen3``: written as they are (no permutation; q/k/v biases and q/k norms by name); head_dim as
  ``attention.key_length``, which transformers does not read for ``qwen3`` (it keeps Qwen3Config's 128).
- ``gemma3_text`` (GGUF architecture ``gemma3``): every ``*norm.weight`` is stored with 1 added
  (``Gemma3Model.norm_shift``: llama.cpp multiplies by the stored weight, HF by 1 + weight); transformers'
  ``Gemma2TensorProcessor`` subtracts it again.

RoPE scaling as llama.cpp writes it: ``linear`` as ``rope.scaling.type``/``factor`` metadata, LLaMA 3's as a
``rope_freqs.weight`` tensor of per-frequency factors; transformers' GGUF reader reads neither. A tied lm_head
is left out (``output.weight`` absent is how a GGUF says tied). Metadata is what transformers'
``GGUF_CONFIG_MAPPING`` reads for the architecture plus what llama.cpp writes anyway; no tokenizer, which
transformers does not need to build the model when ``{arch}.vocab_size`` is present.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

# model_type -> (GGUF architecture, default general.name: a model-card name, as llama.cpp takes it)
ARCHITECTURES = {"llama": ("llama", "Tiny Llama"), "mistral": ("llama", "Tiny Mistral"),
                 "qwen2": ("qwen2", "Tiny Qwen2"), "qwen3": ("qwen3", "Tiny Qwen3"),
                 "gemma3_text": ("gemma3", "Tiny Gemma3"), "phi3": ("phi3", "Tiny Phi3")}


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: per head, rows (first half, second half) -> interleaved pairs."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope(config) -> dict:
    """The (global layers') RoPE parameters, ``rope_theta`` and ``rope_type`` included, under transformers 4 or 5."""
    parameters = getattr(config, "rope_parameters", None)  # transformers 5 (Gemma 3: one entry per layer type)
    if parameters:
        return dict(parameters.get("full_attention", parameters))
    scaling = dict(getattr(config, "rope_scaling", None) or {})  # transformers 4 (Gemma 3: the global layers')
    scaling.setdefault("rope_type", scaling.get("type", "default"))
    return {**scaling, "rope_theta": config.rope_theta}


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """llama.cpp's ``rope_freqs`` tensor for ``rope_type: llama3`` (``LlamaModel.generate_extra_tensors``)."""
    base, factor = rope["rope_theta"], rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def write_gguf(model: torch.nn.Module, path, name: str | None = None) -> Path:
    """Write ``model`` (a ``*ForCausalLM`` of a family in ARCHITECTURES) to ``path`` as an all-F32 GGUF.

    ``name`` is ``general.name`` (default: ARCHITECTURES'); transformers reads a ``llama`` GGUF named exactly
    ``"mistral"`` as a Mistral model, any other name as a LLaMA.
    """
    import gguf

    config = model.config
    arch_name, general_name = ARCHITECTURES[config.model_type]
    arch = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch_name)
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch_name)
    writer.add_name(general_name if name is None else name)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope, head_dim = _rope(config), _head_dim(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope["rope_type"] == "linear":  # what llama.cpp writes for it; transformers' GGUF reader ignores it
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope["rope_type"] == "llama3" and arch_name == "llama":  # a tensor of per-frequency factors instead
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight",
                          llama3_rope_factors(rope, head_dim))
    elif rope["rope_type"] != "default":
        raise NotImplementedError(f"rope_type {rope['rope_type']!r} is not written by this test writer")
    if arch_name == "llama":
        writer.add_rope_dimension_count(head_dim)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch_name == "gemma3":
        writer.add_sliding_window(config.sliding_window)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                     ("pad_token_id", writer.add_pad_token_id)):  # llama.cpp takes these from the tokenizer
        if isinstance(getattr(config, key, None), int):
            add(getattr(config, key))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise KeyError(f"{hf_name} has no GGUF name for architecture {arch_name}")
        data = tensor.detach().to(torch.float32).numpy().copy()
        if arch_name == "llama" and ".attn_q." in gguf_name:
            data = llama_cpp_permute(data, config.num_attention_heads)
        elif arch_name == "llama" and ".attn_k." in gguf_name:
            data = llama_cpp_permute(data, config.num_key_value_heads)
        elif arch_name == "gemma3" and gguf_name.endswith("norm.weight"):
            data = data + 1.0
        writer.add_tensor(gguf_name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
