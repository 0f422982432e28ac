"""Rotary position embeddings with every ``rope_scaling`` type that transformers defines for the
LLaMA / Mistral / Qwen2 / Qwen3 families: default, linear, dynamic (NTK), yarn, longrope and llama3.

The formulas follow transformers 4.57 (``transformers/modeling_rope_utils.py``) operation for
operation, in fp32 as there, so that the frequencies equal transformers' own:

* ``linear``: the default frequencies divided by ``factor``.
* ``dynamic``: for a forward over ``seq_len > max_position_embeddings`` positions the base becomes
  ``theta * (factor * seq_len / max_position_embeddings - (factor - 1)) ** (dim / (dim - 2))``; shorter
  sequences use the default frequencies. (Transformers' module keeps the largest length it has seen
  and uses it for later, shorter sequences until one is shorter than max_position_embeddings; we
  compute every forward as a freshly loaded transformers model computes its first one.)
* ``yarn``: interpolated (``/ factor``) and extrapolated frequencies blended by a linear ramp between
  the dimensions where ``beta_fast`` and ``beta_slow`` rotations fit in
  ``original_max_position_embeddings`` (default: max_position_embeddings), the bounds floored/ceiled
  unless ``truncate`` is false; attention factor ``attention_factor`` or ``0.1 * ln(factor) + 1`` (with
  ``mscale`` and ``mscale_all_dim``: ``(0.1 * mscale * ln f + 1) / (0.1 * mscale_all_dim * ln f + 1)``).
* ``longrope``: the default frequencies divided per dimension by ``long_factor`` when the sequence is
  longer than the original context, else by ``short_factor``; attention factor ``attention_factor``
  or ``sqrt(1 + ln(factor) / ln(original context))``. In transformers the original context of a
  longrope model is the *top-level* config key ``original_max_position_embeddings`` (Phi-3 style; a
  copy inside rope_scaling is ignored), and when it is set the factor is
  ``max_position_embeddings / original_max_position_embeddings``. Our config keeps that value inside
  rope_scaling (``longrope_scaling_from_hf`` / ``hf_rope_values`` move it in and out).
* ``llama3``: low frequencies divided by ``factor``, high ones kept, the band in between smoothed.

Where transformers multiplies cos and sin by an attention factor (yarn, longrope), so do we (in fp32,
before casting to the activations' dtype): it scales q and k, i.e. the attention logits by its square.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from numbers import Real
from typing import Optional, Tuple

import torch

from llmshearing.errors import ConfigError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
REQUIRED_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "longrope": ("short_factor", "long_factor"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}
NUMBER_KEYS = ("factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
               "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
_CPU = torch.device("cpu")  # computed on the CPU (never under a meta-device context), then moved


def rope_type_of(scaling: Optional[dict]) -> str:
    """The rope type of a (checked) rope_scaling dict; ``default`` for none."""
    if not scaling:
        return "default"
    # transformers' configs copy the old key "type" over "rope_type" (configuration_llama.py, BC)
    return scaling["type"] if "type" in scaling else scaling.get("rope_type")


def check_rope_scaling(scaling, head_dim: int) -> Optional[dict]:
    """``scaling`` checked and normalised (a copy with ``rope_type`` set; None for no scaling).

    Raises a one-line ConfigError for an unsupported type, a missing required key or a value that
    transformers could not compute with either."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be a mapping, got {scaling!r}")
    if not scaling:
        return None
    supported = ", ".join(ROPE_TYPES)
    rope_type = rope_type_of(scaling)
    if rope_type is None:
        raise ConfigError(f"rope_scaling {scaling} has no rope_type; supported: {supported}")
    if rope_type not in ROPE_TYPES:
        raise ConfigError(f"rope_scaling type {rope_type!r} is not supported; supported: {supported}")
    scaling = {**scaling, "rope_type": rope_type}
    missing = [key for key in REQUIRED_KEYS[rope_type] if scaling.get(key) is None]
    if rope_type == "longrope" and all(scaling.get(key) is None for key in
                                       ("factor", "attention_factor", "original_max_position_embeddings")):
        missing.append("factor")  # transformers needs one of them for the attention factor
    if missing:
        needs = ", ".join(REQUIRED_KEYS[rope_type])
        if rope_type == "longrope":
            needs += " and factor, attention_factor or a top-level original_max_position_embeddings"
        raise ConfigError(f"rope_scaling type {rope_type!r} is missing required key(s) {', '.join(missing)} "
                          f"(it needs {needs}); supported types: {supported}")
    for key in NUMBER_KEYS:
        value = scaling.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real) or value <= 0):
            raise ConfigError(f"rope_scaling type {rope_type!r}: {key} must be a positive number, got {value!r}")
    if rope_type == "longrope":
        for key in ("short_factor", "long_factor"):
            factors = scaling[key]
            if (not isinstance(factors, (list, tuple)) or len(factors) != head_dim // 2
                    or any(isinstance(x, bool) or not isinstance(x, Real) for x in factors)):
                raise ConfigError(f"rope_scaling type 'longrope': {key} must be a list of {head_dim // 2} numbers "
                                  f"(head_dim / 2), got {factors!r}")
    return scaling


def with_v4_rope_keys(hf: dict) -> dict:
    """An HF config dict with ``rope_theta`` / ``rope_scaling`` (/ Gemma's ``rope_local_base_freq``) as
    transformers 4 writes them: transformers 5 folds them into ``rope_parameters`` (one dict per
    attention type for Gemma 3), and reading only the old keys would silently give the default base."""
    parameters = hf.get("rope_parameters")
    if not isinstance(parameters, dict) or hf.get("rope_theta") is not None:
        return hf
    hf = dict(hf)
    full = parameters.get("full_attention", parameters)
    hf["rope_theta"] = full.get("rope_theta", 10000.0)
    scaling = {key: value for key, value in full.items() if key != "rope_theta"}
    hf["rope_scaling"] = None if scaling.get("rope_type", scaling.get("type", "default")) == "default" else scaling
    local = parameters.get("sliding_attention")
    if isinstance(local, dict) and local.get("rope_theta") is not None:
        hf["rope_local_base_freq"] = local["rope_theta"]
    return hf


def longrope_scaling_from_hf(hf: dict) -> Optional[dict]:
    """An HF config dict's rope_scaling as our config holds it: for longrope, the top-level
    ``original_max_position_embeddings`` (the one transformers reads) moves into the dict and a copy
    that only sits in the dict (which transformers ignores) is dropped."""
    scaling = hf.get("rope_scaling")
    if not isinstance(scaling, dict) or rope_type_of(scaling) != "longrope":
        return scaling
    scaling = dict(scaling)
    scaling.pop("original_max_position_embeddings", None)
    if hf.get("original_max_position_embeddings") is not None:
        scaling["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
    return scaling


def hf_rope_values(scaling: Optional[dict]) -> dict:
    """The HF config keys describing our rope_scaling (the inverse of ``longrope_scaling_from_hf``)."""
    scaling = dict(scaling) if scaling else None
    values = {"rope_scaling": scaling}
    if scaling and rope_type_of(scaling) == "longrope" and "original_max_position_embeddings" in scaling:
        values["original_max_position_embeddings"] = scaling.pop("original_max_position_embeddings")
    return values


# ---- frequencies ---------------------------------------------------------------------------------
def _exponents(dim: int) -> torch.Tensor:
    return torch.arange(0, dim, 2, dtype=torch.int64, device=_CPU).float() / dim


def _default(dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** _exponents(dim))


def _dynamic(dim: int, theta: float, scaling: dict, max_positions: int, seq_len: Optional[int]) -> torch.Tensor:
    factor = scaling["factor"]
    if seq_len is None or seq_len <= max_positions:
        # transformers' initial frequencies (python floats: seq_len = max_position_embeddings)
        base = theta * ((factor * max_positions / max_positions) - (factor - 1)) ** (dim / (dim - 2))
    else:  # transformers' recomputation for a longer sequence (seq_len an int64 tensor, fp32 arithmetic)
        length = torch.tensor(seq_len, dtype=torch.int64, device=_CPU)
        base = theta * ((factor * length / max_positions) - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / (base ** _exponents(dim))


def _yarn_attention_factor(scaling: dict) -> float:
    if scaling.get("attention_factor") is not None:
        return scaling["attention_factor"]
    factor, mscale, mscale_all_dim = scaling["factor"], scaling.get("mscale"), scaling.get("mscale_all_dim")

    def get_mscale(scale, m=1):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if mscale and mscale_all_dim:
        return float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
    return get_mscale(factor)


def _yarn(dim: int, theta: float, scaling: dict, max_positions: int) -> torch.Tensor:
    factor = scaling["factor"]
    original = scaling.get("original_max_position_embeddings") or max_positions
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def correction_dim(rotations):  # the dimension whose wavelength fits ``rotations`` times in the context
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device=_CPU) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp
    pos_freqs = theta ** (torch.arange(0, dim, 2, device=_CPU).to(dtype=torch.float) / dim)
    extrapolated, interpolated = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    return interpolated * (1 - extrapolation_weight) + extrapolated * extrapolation_weight


def _longrope_original(scaling: dict, max_positions: int) -> int:
    return scaling.get("original_max_position_embeddings") or max_positions


def _longrope_attention_factor(scaling: dict, max_positions: int) -> float:
    if scaling.get("attention_factor") is not None:
        return scaling["attention_factor"]
    original = scaling.get("original_max_position_embeddings")
    factor = max_positions / original if original else scaling["factor"]
    original = original or max_positions
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


def _longrope(dim: int, theta: float, scaling: dict, max_positions: int, seq_len: Optional[int]) -> torch.Tensor:
    long = seq_len is not None and seq_len > _longrope_original(scaling, max_positions)
    ext_factors = torch.tensor(scaling["long_factor" if long else "short_factor"], dtype=torch.float32, device=_CPU)
    return 1.0 / (ext_factors * theta ** _exponents(dim))


def _llama3(dim: int, theta: float, scaling: dict) -> torch.Tensor:
    inv_freq = _default(dim, theta)
    factor = scaling["factor"]
    low_freq_factor, high_freq_factor = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_context = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context / low_freq_factor
    high_freq_wavelen = old_context / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_frequencies(head_dim: int, theta: float, scaling: Optional[dict],
                     max_position_embeddings: Optional[int] = None,
                     seq_len: Optional[int] = None) -> Tuple[torch.Tensor, float]:
    """(inverse frequencies [head_dim / 2] in fp32 on the CPU, attention factor) for a forward over
    ``seq_len`` positions (None: a short sequence). ``scaling`` is checked first."""
    rope_type = rope_type_of(scaling)
    if rope_type in ("dynamic", "yarn", "longrope") and max_position_embeddings is None:
        raise ConfigError(f"rope_scaling type {rope_type!r} needs max_position_embeddings")
    scaling = check_rope_scaling(scaling, head_dim)
    rope_type = rope_type_of(scaling)
    if rope_type == "default":
        inv_freq, attention = _default(head_dim, theta), 1.0
    elif rope_type == "linear":
        inv_freq, attention = _default(head_dim, theta) / scaling["factor"], 1.0
    elif rope_type == "dynamic":
        inv_freq, attention = _dynamic(head_dim, theta, scaling, max_position_embeddings, seq_len), 1.0
    elif rope_type == "yarn":
        inv_freq, attention = _yarn(head_dim, theta, scaling, max_position_embeddings), _yarn_attention_factor(scaling)
    elif rope_type == "longrope":
        inv_freq = _longrope(head_dim, theta, scaling, max_position_embeddings, seq_len)
        attention = _longrope_attention_factor(scaling, max_position_embeddings)
    else:
        inv_freq, attention = _llama3(head_dim, theta, scaling), 1.0
    return inv_freq.float(), float(attention)


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: Optional[dict],
                             max_position_embeddings: Optional[int] = None,
                             seq_len: Optional[int] = None) -> torch.Tensor:
    """The inverse frequencies alone (see ``rope_frequencies``)."""
    return rope_frequencies(head_dim, theta, scaling, max_position_embeddings, seq_len)[0]


class RotaryEmbedding:
    """A model's RoPE: fp32 frequencies per device and, for the length-dependent types (dynamic,
    longrope), per sequence length.

    A plain object, not an ``nn.Module`` with buffers: casting the model (``.to(bfloat16)``, FSDP's
    buffer dtype) must not round the frequencies, and they are never saved in a state dict."""

    CACHE_SIZE = 8

    def __init__(self, head_dim: int, theta: float, scaling: Optional[dict], max_position_embeddings: int):
        self.head_dim, self.theta, self.max_position_embeddings = head_dim, theta, max_position_embeddings
        self.scaling = check_rope_scaling(scaling, head_dim)
        self.rope_type = rope_type_of(self.scaling)
        self._cache: "OrderedDict[tuple, Tuple[torch.Tensor, float]]" = OrderedDict()

    def _variant(self, seq_len: Optional[int]):
        """What of the sequence length the frequencies depend on (the cache key)."""
        if seq_len is None:
            return None
        if self.rope_type == "dynamic":
            return seq_len if seq_len > self.max_position_embeddings else None
        if self.rope_type == "longrope":
            return seq_len > _longrope_original(self.scaling, self.max_position_embeddings)
        return None

    def frequencies(self, device: torch.device, seq_len: Optional[int] = None) -> Tuple[torch.Tensor, float]:
        """(fp32 inverse frequencies on ``device``, attention factor) for a forward over ``seq_len`` positions."""
        device = torch.device(device)
        variant = self._variant(seq_len)
        key = (variant, device)
        if key not in self._cache:
            representative = None if variant is None else seq_len
            inv_freq, attention = rope_frequencies(self.head_dim, self.theta, self.scaling,
                                                   self.max_position_embeddings, representative)
            self._cache[key] = (inv_freq.to(device), attention)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return self._cache[key]

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype, seq_len: Optional[int] = None):
        """cos/sin [len(positions), head_dim] in ``dtype``; ``seq_len`` (default: the number of positions)
        picks the frequencies of the length-dependent types, as transformers' ``max(position_ids) + 1``."""
        seq_len = positions.numel() if seq_len is None else seq_len
        inv_freq, attention = self.frequencies(positions.device, seq_len)
        return rope_cos_sin(inv_freq, positions, dtype, attention)


def rope_cos_sin(inv_freq: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype, attention_factor: float = 1.0):
    """cos/sin of ``positions * inv_freq`` (fp32), times ``attention_factor``, then cast to ``dtype``."""
    freqs = positions.float()[:, None] * inv_freq.to(positions.device)[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    cos, sin = angles.cos(), angles.sin()
    if attention_factor != 1.0:
        cos, sin = cos * attention_factor, sin * attention_factor
    return cos.to(dtype), sin.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [batch, heads, seq, head_dim]; cos/sin: [seq, head_dim]."""
    return x * cos + _rotate_half(x) * sin
