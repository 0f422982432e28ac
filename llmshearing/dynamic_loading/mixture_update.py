"""The Sheared-LLaMA dynamic batch loading update (paper, Algorithm 1, with the clamp):

    Δ_i = max(ℓ_i − ℓref_i, 0)
    α_i ∝ exp(ln w_i + η Δ_i)           (w: the loading weights in force, i.e. w_{t−m})
    w'  = (1 − c) · α / Σα + c / k

A loss that is not finite (a domain with no sample in the window when losses come from the
training batches) counts as Δ_i = 0: no evidence, no change beyond the smoothing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from llmshearing.errors import ConfigError


@dataclass(frozen=True)
class MixtureUpdate:
    reference_losses: np.ndarray  # per domain, in the loader's domain order
    eta: float = 1.0
    smoothing: float = 1.0e-4

    def __post_init__(self) -> None:
        if not np.isfinite(self.reference_losses).all():
            raise ConfigError(f"reference losses must be finite, got {self.reference_losses.tolist()}")
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise ConfigError(f"dynamic_loading.eta must be a non-negative number, got {self.eta}")
        if not 0 <= self.smoothing <= 1:
            raise ConfigError(f"dynamic_loading.smoothing must be in [0, 1], got {self.smoothing}")

    @classmethod
    def for_domains(cls, domains: Sequence[str], reference: Mapping[str, float], eta: float,
                    smoothing: float) -> "MixtureUpdate":
        check_domains_match(domains, reference, "reference losses")
        return cls(np.array([float(reference[d]) for d in domains]), eta, smoothing)

    def excess_losses(self, losses) -> np.ndarray:
        losses = np.asarray(losses, dtype=np.float64)
        excess = np.maximum(losses - self.reference_losses, 0.0)
        return np.where(np.isfinite(excess), excess, 0.0)

    def __call__(self, weights, losses) -> np.ndarray:
        with np.errstate(divide="ignore"):  # a zero weight stays zero before the smoothing
            logits = np.log(np.asarray(weights, dtype=np.float64)) + self.eta * self.excess_losses(losses)
        alpha = np.exp(logits - logits.max())
        return (1.0 - self.smoothing) * alpha / alpha.sum() + self.smoothing / len(alpha)


def check_domains_match(domains: Sequence[str], values: Mapping[str, float], what: str) -> None:
    missing = [d for d in domains if d not in values]
    extra = [d for d in values if d not in domains]
    if missing or extra:
        raise ConfigError(f"{what} are for another set of domains: missing {missing}, "
                          f"not in the run {extra} (run domains: {list(domains)})")
