"""Which sample of which domain fills each position of each global batch: a pure function of
(seed, step, weights in force at that step, per-domain counters).

The whole sampling state is a :class:`MixtureCursor`: the number of global batches drawn and,
per domain, the number of samples drawn so far (all ranks together). Every rank and every
dataloader worker replays the (cheap) domain draw of every global batch, so all of them agree
on the counters without talking to each other; each then reads only the positions it serves.

- Domain of each position: inverse-CDF sampling of the weights with uniforms from
  ``np.random.default_rng([seed, step])`` (i.i.d. per position).
- Sample within a domain: the n-th draw of domain d reads position ``n % size`` of pass
  ``n // size``, through a seeded permutation that is new for every pass (re-shuffled repeats).
- ``max_repeats``: a domain that has used up ``1 + max_repeats`` passes is no longer drawn
  (its weight is set to 0 and the others renormalised); it may overshoot by at most one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from llmshearing.dynamic_loading.permutation import PermutationBlocks, stream_key
from llmshearing.errors import ConfigError


@dataclass
class MixtureCursor:
    step: int  # global batches drawn so far
    drawn: np.ndarray  # int64 [num_domains]: samples drawn per domain so far, all ranks

    @classmethod
    def start(cls, num_domains: int) -> "MixtureCursor":
        return cls(0, np.zeros(num_domains, dtype=np.int64))

    def copy(self) -> "MixtureCursor":
        return MixtureCursor(self.step, self.drawn.copy())


@dataclass
class StepDraw:
    domains: np.ndarray  # int64 [global_batch]: domain of each position
    draw_numbers: np.ndarray  # int64 [global_batch]: how many of that domain were drawn before


class MixtureSampler:
    def __init__(self, seed: int, domain_sizes: Sequence[int], global_batch_size: int,
                 max_repeats: Optional[int] = None) -> None:
        if global_batch_size < 1:
            raise ConfigError(f"global batch size must be positive, got {global_batch_size}")
        self.seed = int(seed)
        self.sizes = np.asarray(domain_sizes, dtype=np.int64)
        if (self.sizes < 1).any():
            raise ConfigError(f"every domain needs at least one sample, got sizes {self.sizes.tolist()}")
        self.global_batch_size = int(global_batch_size)
        self.max_repeats = max_repeats
        self._permutations = PermutationBlocks()

    @property
    def num_domains(self) -> int:
        return len(self.sizes)

    def draw(self, cursor: MixtureCursor, weights: np.ndarray) -> StepDraw:
        """The domains (and per-domain draw numbers) of the global batch at ``cursor.step``."""
        weights = self._allowed(np.asarray(weights, dtype=np.float64), cursor.drawn)
        cdf = np.cumsum(weights) / weights.sum()  # last entry is exactly 1.0
        uniforms = np.random.default_rng([self.seed, cursor.step]).random(self.global_batch_size)
        domains = np.searchsorted(cdf, uniforms, side="right").astype(np.int64)
        return StepDraw(domains, cursor.drawn[domains] + _occurrence_index(domains, self.num_domains))

    def advance(self, cursor: MixtureCursor, draw: StepDraw) -> None:
        cursor.drawn += np.bincount(draw.domains, minlength=self.num_domains)
        cursor.step += 1

    def sample_indices(self, domains: np.ndarray, draw_numbers: np.ndarray) -> np.ndarray:
        """Index inside its domain of each drawn sample (one permutation per domain and pass)."""
        result = np.empty(len(domains), dtype=np.int64)
        passes = draw_numbers // self.sizes[domains]
        for domain, pass_number in set(zip(domains.tolist(), passes.tolist())):
            chosen = (domains == domain) & (passes == pass_number)
            size = int(self.sizes[domain])
            result[chosen] = self._permutations.lookup(draw_numbers[chosen] % size, size,
                                                       stream_key(self.seed, domain, pass_number))
        return result

    def passes_started(self, drawn: np.ndarray) -> np.ndarray:
        """Per domain: how many passes over its data have been started (0 before any draw)."""
        return -(-np.asarray(drawn, dtype=np.int64) // self.sizes)

    def _allowed(self, weights: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        if self.max_repeats is None:
            return weights
        allowed = weights * (drawn < (self.max_repeats + 1) * self.sizes)
        if allowed.sum() <= 0:
            raise ConfigError(f"every domain with a non-zero weight has been repeated "
                              f"max_repeats={self.max_repeats} times; raise max_repeats or add data")
        return allowed


def _occurrence_index(domains: np.ndarray, num_domains: int) -> np.ndarray:
    """For each position, how many earlier positions hold the same domain."""
    order = np.argsort(domains, kind="stable")
    counts = np.bincount(domains, minlength=num_domains)
    first = np.cumsum(counts) - counts
    occurrence = np.empty(len(domains), dtype=np.int64)
    occurrence[order] = np.arange(len(domains)) - first[domains[order]]
    return occurrence


def iterate_draws(sampler: MixtureSampler, cursor: MixtureCursor,
                  weights_at) -> Iterator[Tuple[int, StepDraw]]:
    """(step, draw) pairs from ``cursor`` on, advancing it; ``weights_at(step)`` gives the weights
    in force at each step, or None to end the iteration."""
    while (weights := weights_at(cursor.step)) is not None:
        draw = sampler.draw(cursor, weights)
        step = cursor.step
        sampler.advance(cursor, draw)
        yield step, draw
