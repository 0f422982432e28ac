"""The one model (LLaMA, Mistral, Qwen2/2.5, Qwen3: family flags of LlamaConfig): plain PyTorch, HF
parameter names, optional pruning masks.

Each decoder layer is built from its own sizes (``LlamaConfig.layer_config``), so a config with
per-layer sizes gives layers of different widths. Masks are multiplied in at fixed points (they
assume equal sizes in every layer); with no masks this is an ordinary LLaMA:
- ``hidden_z`` [d_model]: embedding output, each residual branch output, lm_head input; RMSNorm
  averages over the kept (non-zero) channels only.
- ``layer_z`` [L]: both residual branches of a layer.
- ``head_layer_z`` [L] / ``mlp_z`` [L]: the attention / MLP block of a layer.
- ``head_z`` [L, n_heads]: each query head's output before ``o_proj``.
- ``intermediate_z`` [L, d_ff]: the MLP activations before ``down_proj``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from llmshearing.model.config import LlamaConfig
from llmshearing.model.rope import RotaryEmbedding, apply_rope

MASK_NAMES = ("layer_z", "head_layer_z", "head_z", "mlp_z", "intermediate_z", "hidden_z")
Masks = Dict[str, torch.Tensor]

try:  # optional fast path on GPUs
    from flash_attn import flash_attn_func  # type: ignore
except Exception:  # noqa: BLE001 - any import failure just disables the option
    flash_attn_func = None


class RMSNorm(nn.Module):
    """RMSNorm; ``plus_one`` (Gemma) scales by 1 + weight, in fp32 before the cast back, as Gemma does."""

    def __init__(self, size: int, eps: float, plus_one: bool = False):
        super().__init__()
        self.plus_one = plus_one
        self.weight = nn.Parameter(torch.zeros(size) if plus_one else torch.ones(size))
        self.eps = eps

    def scale(self) -> torch.Tensor:
        """The per-channel factor the normalised input is multiplied by."""
        return 1.0 + self.weight.float() if self.plus_one else self.weight

    def forward(self, x: torch.Tensor, hidden_z: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        squares = x.pow(2)
        if hidden_z is None:
            variance = squares.mean(-1, keepdim=True)
        else:
            # pruned channels hold exact zeros; average over the kept ones as the sliced model does
            kept = torch.count_nonzero(hidden_z).clamp(min=1)
            variance = squares.sum(-1, keepdim=True) / kept
        x = x * torch.rsqrt(variance + self.eps)
        if self.plus_one:
            return (x * self.scale()).to(dtype)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, window: Optional[int] = None):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.attn_impl = config.attn_impl
        self.window = window  # sliding-window attention: a query sees itself and the window - 1 tokens before
        # Gemma scales the scores by query_pre_attn_scalar ** -0.5 instead of head_dim ** -0.5
        self.scale = None if config.query_pre_attn_scalar is None else config.query_pre_attn_scalar ** -0.5
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=config.o_bias)
        if config.qk_norm:  # one RMSNorm over head_dim, shared by every head (kept whole when heads go)
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, config.norm_plus_one)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, config.norm_plus_one)

    def _heads(self, projection: nn.Linear, x, count: int, norm: Optional[nn.Module] = None):
        batch, seq, _ = x.shape
        heads = projection(x).view(batch, seq, count, self.head_dim)
        return (heads if norm is None else norm(heads)).transpose(1, 2)

    def forward(self, x, cos, sin, head_z: Optional[torch.Tensor] = None):
        batch, seq, _ = x.shape
        q = self._heads(self.q_proj, x, self.num_heads, getattr(self, "q_norm", None))
        k = self._heads(self.k_proj, x, self.num_kv_heads, getattr(self, "k_norm", None))
        v = self._heads(self.v_proj, x, self.num_kv_heads)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = self._attend(q, k, v)  # [batch, heads, seq, head_dim]
        if head_z is not None:
            out = out * head_z.view(1, -1, 1, 1).to(out.dtype)
        out = out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim)
        return self.o_proj(out)

    def _attend(self, q, k, v):
        seq = q.shape[2]
        windowed = self.window is not None and seq > self.window
        if self.attn_impl == "flash_attn" and flash_attn_func is not None and q.is_cuda:
            window = (self.window - 1, 0) if windowed else (-1, -1)
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True,
                                  window_size=window, softmax_scale=self.scale)
            return out.transpose(1, 2)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        if windowed:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(seq, self.window, q.device),
                                                  scale=self.scale)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)


def sliding_window_mask(seq: int, window: int, device) -> torch.Tensor:
    """[seq, seq] bool, True where query i may attend key j: j <= i and i - j < window (as transformers)."""
    positions = torch.arange(seq, device=device)
    distance = positions[:, None] - positions[None, :]
    return (distance >= 0) & (distance < window)


ACTIVATIONS = {"silu": F.silu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.act = ACTIVATIONS[config.hidden_act]
        d, d_ff = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, d_ff, bias=False)
        self.up_proj = nn.Linear(d, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d, bias=False)

    def forward(self, x, intermediate_z: Optional[torch.Tensor] = None):
        h = self.act(self.gate_proj(x)) * self.up_proj(x)
        if intermediate_z is not None:
            h = h * intermediate_z.to(h.dtype)
        return self.down_proj(h)


def _scale(x: torch.Tensor, *factors: Optional[torch.Tensor]) -> torch.Tensor:
    for factor in factors:
        if factor is not None:
            x = x * factor.to(x.dtype)
    return x


class DecoderLayer(nn.Module):
    """Pre-norm residual blocks. With ``sandwich_norms`` (Gemma) each block's output is normalised too,
    and the names follow Gemma: ``post_attention_layernorm`` is then the attention block's output norm and
    ``pre_feedforward_layernorm`` the MLP's input norm (LLaMA's ``post_attention_layernorm``)."""

    def __init__(self, config: LlamaConfig, window: Optional[int] = None):
        super().__init__()
        self.sandwich = config.sandwich_norms
        self.self_attn = Attention(config, window)
        self.mlp = MLP(config)

        def norm():
            return RMSNorm(config.hidden_size, config.rms_norm_eps, config.norm_plus_one)

        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()
        if self.sandwich:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()

    def forward(self, h, cos, sin, masks: Masks, index: int):
        def pick(name):
            mask = masks.get(name)
            return None if mask is None else mask[index]

        hidden_z = masks.get("hidden_z")
        layer_z = pick("layer_z")
        attn = self.self_attn(self.input_layernorm(h, hidden_z), cos, sin, head_z=pick("head_z"))
        mlp_norm = self.post_attention_layernorm
        if self.sandwich:
            # pruned channels are zeroed before the output norm, whose variance runs over the kept ones; the
            # block masks act after it (a norm would undo a scale applied before)
            attn = self.post_attention_layernorm(_scale(attn, hidden_z), hidden_z)
            mlp_norm = self.pre_feedforward_layernorm
        h = h + _scale(attn, pick("head_layer_z"), layer_z, hidden_z)
        mlp = self.mlp(mlp_norm(h, hidden_z), intermediate_z=pick("intermediate_z"))
        if self.sandwich:
            mlp = self.post_feedforward_layernorm(_scale(mlp, hidden_z), hidden_z)
        return h + _scale(mlp, pick("mlp_z"), layer_z, hidden_z)


class LlamaModel(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_scale = config.hidden_size ** 0.5 if config.scale_embeddings else None  # Gemma: × √hidden
        self.layers = nn.ModuleList(DecoderLayer(config.layer_config(i), config.window_of(i))
                                    for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, config.norm_plus_one)
        # a plain object holding fp32 tensors, not a buffer: casting the model (``.to(bfloat16)``, FSDP's
        # buffer dtype) would round the frequencies and shift every rotation angle at long positions
        self._rope = RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling,
                                     config.max_position_embeddings)
        # Gemma 3: sliding-window layers rotate with their own base and no scaling
        self._local_rope = None if config.rope_local_theta is None else RotaryEmbedding(
            config.head_dim, config.rope_local_theta, None, config.max_position_embeddings)
        self._local_layers = [config.window_of(i) is not None for i in range(config.num_hidden_layers)]
        self.gradient_checkpointing = False

    def rope_inv_freq(self, device: torch.device, seq_len: Optional[int] = None) -> torch.Tensor:
        """RoPE inverse frequencies in fp32 on ``device`` for a forward over ``seq_len`` positions (None: a
        short one; dynamic and longrope scaling depend on it), computed once per device and variant."""
        return self._rope.frequencies(device, seq_len)[0]

    def rope_cos_sin(self, positions: torch.Tensor, dtype: torch.dtype, seq_len: Optional[int] = None):
        """cos/sin for ``positions`` (attention factor of yarn/longrope applied), as the forward uses them."""
        return self._rope.cos_sin(positions, dtype, seq_len)

    def forward(self, input_ids: torch.Tensor, masks: Optional[Masks] = None) -> torch.Tensor:
        masks = masks or {}
        hidden_z = masks.get("hidden_z")
        h = self.embed_tokens(input_ids)
        if self.embed_scale is not None:
            h = h * torch.tensor(self.embed_scale, dtype=h.dtype)  # rounded to the weights' dtype, as transformers
        h = _scale(h, hidden_z)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        rotations = self.rope_cos_sin(positions, h.dtype)
        local = rotations if self._local_rope is None else self._local_rope.cos_sin(positions, h.dtype, None)
        for index, layer in enumerate(self.layers):
            cos, sin = local if self._local_layers[index] else rotations
            if self.gradient_checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(layer, h, cos, sin, masks, index, use_reentrant=False)
            else:
                h = layer(h, cos, sin, masks, index)
        return self.norm(h, hidden_z)


class LlamaForCausalLM(nn.Module):
    """Parameter names match `transformers.LlamaForCausalLM`, so HF conversion is a key copy."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @classmethod
    def empty(cls, config: LlamaConfig, device=None, dtype=None) -> "LlamaForCausalLM":
        """A model with uninitialised weights (fast: for loaders and the slicer that overwrite them)."""
        with torch.device("meta"):
            model = cls.__new__(cls)
            nn.Module.__init__(model)
            model.config = config
            model.model = LlamaModel(config)
            model.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        model = model.to_empty(device=device or "cpu")
        if dtype is not None:
            model = model.to(dtype)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.model.embed_tokens.weight
        return model

    def reset_parameters(self):
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.constant_(module.weight, 0.0 if module.plus_one else 1.0)

    def forward(self, input_ids: torch.Tensor, masks: Optional[Masks] = None,
                head: Optional[Callable[[torch.Tensor, torch.Tensor], Any]] = None):
        """Logits [batch, seq, vocab]; with ``head``, ``head(hidden, lm_head weight)`` instead, where
        ``hidden`` [batch, seq, d] is what the lm_head would multiply (``hidden_z`` applied). The head
        runs inside this forward, where FSDP holds the weight unsharded (see model/next_token_loss.py)."""
        if masks:
            unknown = set(masks) - set(MASK_NAMES)
            if unknown:
                raise KeyError(f"unknown mask names {sorted(unknown)}; expected some of {MASK_NAMES}")
        h = self.model(input_ids, masks)
        hidden_z = (masks or {}).get("hidden_z")
        hidden = _scale(h, hidden_z)
        if head is not None:
            return head(hidden, self.lm_head.weight)
        return self.lm_head(hidden)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
