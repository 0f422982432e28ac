"""Token budgets: parsing amounts like ``2M`` / ``0.4B`` and sharing a total among domains."""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from llmshearing.errors import LLMShearingError

ALL = None  # a budget of "all": every token the domain has
# what a domain with fewer tokens than its budget does: stop the run, give what it has, repeat its samples
SHORT_DOMAIN_POLICIES = ("error", "cap", "repeat")

# The Sheared-LLaMA paper's RedPajama mixture (the domains' initial dynamic-loading weights too).
PROPORTION_PRESETS: dict[str, dict[str, float]] = {
    "redpajama": {"cc": 0.67, "c4": 0.15, "github": 0.045, "book": 0.045, "wiki": 0.045,
                  "arxiv": 0.025, "stackexchange": 0.02},
}
_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgt]?)\s*$", re.IGNORECASE)


class BudgetError(LLMShearingError):
    """A token budget or proportion that cannot be used."""


def parse_token_amount(text: str, option: str, allow_all: bool = False) -> int | None:
    """``2M`` -> 2,000,000; ``0.4B`` -> 400,000,000; ``all`` -> None (when allowed)."""
    if allow_all and text.strip().lower() == "all":
        return ALL
    match = _AMOUNT.match(text)
    if not match:
        allowed = "a number with an optional k/M/B/T suffix" + (" or 'all'" if allow_all else "")
        raise BudgetError(f"{option} {text!r} is not a token amount; give {allowed} (e.g. 2M, 0.4B)")
    value = float(match.group(1)) * _SUFFIXES[match.group(2).lower()]
    if value < 1:
        raise BudgetError(f"{option} must be at least one token, got {text!r}")
    return int(round(value))


def parse_proportions(text: str | None, domains: Sequence[str]) -> dict[str, float]:
    """Domain weights summing to 1: ``None``/``equal``, a preset name, or ``a=0.6,b=0.4``."""
    if text is None or text.strip().lower() == "equal":
        return {domain: 1.0 / len(domains) for domain in domains}
    preset = PROPORTION_PRESETS.get(text.strip().lower())
    weights = dict(preset) if preset is not None else _parse_weight_list(text)
    missing = [domain for domain in domains if domain not in weights]
    unknown = [name for name in weights if name not in domains]
    source = f"preset '{text}'" if preset is not None else "--proportions"
    if missing or unknown:
        raise BudgetError(f"{source} names domains {sorted(weights)} but the corpus has {list(domains)}"
                          + (f" (missing: {missing})" if missing else "")
                          + (f" (not in the corpus: {unknown})" if unknown else "")
                          + "; name every domain once")
    total = sum(weights[domain] for domain in domains)
    if total <= 0:
        raise BudgetError(f"{source} weights must not all be zero")
    return {domain: weights[domain] / total for domain in domains}


def _parse_weight_list(text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, value = item.partition("=")
        try:
            weight = float(value) if separator else math.nan
        except ValueError:
            weight = math.nan
        if not name.strip() or not math.isfinite(weight) or weight < 0:
            presets = ", ".join(["equal", *PROPORTION_PRESETS])
            raise BudgetError(f"--proportions item {item!r} is not DOMAIN=WEIGHT with a non-negative number "
                              f"(or give a preset: {presets})")
        if name.strip() in weights:
            raise BudgetError(f"--proportions names domain '{name.strip()}' twice")
        weights[name.strip()] = weight
    return weights


def split_total(total: int | None, proportions: Mapping[str, float]) -> dict[str, int | None]:
    """Each domain's share of a total budget (``None`` stays "all" for every domain)."""
    if total is ALL:
        return {domain: ALL for domain in proportions}
    return {domain: int(round(total * weight)) for domain, weight in proportions.items()}


def samples_for(tokens: int | None, seq_len: int) -> int | None:
    """Samples that hold at least ``tokens`` tokens (None stays "all")."""
    return None if tokens is ALL else max(1, math.ceil(tokens / seq_len))
