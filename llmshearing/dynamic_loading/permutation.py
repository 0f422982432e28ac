"""A seeded pseudo-random permutation of ``[0, size)`` evaluated at any positions, in O(1) memory.

``permuted(indices, size, key)`` maps positions to sample ids without ever materialising the
permutation: a Feistel network on the smallest ``2^(2h) >= size`` (a bijection there), with
cycle-walking to stay inside ``[0, size)`` (still a bijection on ``[0, size)``). A shuffled
pass over a domain of millions of samples therefore costs no memory per dataloader worker.
:class:`PermutationBlocks` evaluates it a block of consecutive positions at a time (draws from a
domain move forward through its pass), so the per-sample cost is a lookup.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np

_ROUNDS = 6
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(values: np.ndarray) -> np.ndarray:
    """A strong 64-bit integer hash (the splitmix64 finaliser); uint64 arithmetic wraps."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def _round_keys(key: int) -> np.ndarray:
    seeds = np.arange(1, _ROUNDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _mix64(seeds ^ np.uint64(key & 0xFFFFFFFFFFFFFFFF))


def _feistel(values: np.ndarray, half_bits: int, keys: np.ndarray) -> np.ndarray:
    half_mask = np.uint64((1 << half_bits) - 1)
    shift = np.uint64(half_bits)
    left, right = values >> shift, values & half_mask
    for round_key in keys:
        left, right = right, left ^ (_mix64(right ^ round_key) & half_mask)
    return (left << shift) | right


def permuted(indices, size: int, key: int) -> np.ndarray:
    """Images of ``indices`` (each in ``[0, size)``) under the permutation chosen by ``key``."""
    if size < 1:
        raise ValueError(f"cannot permute an empty range (size {size})")
    values = np.asarray(indices, dtype=np.uint64).copy()
    if values.size and int(values.max()) >= size:
        raise ValueError(f"index {int(values.max())} is outside [0, {size})")
    half_bits = max(1, (int(size - 1).bit_length() + 1) // 2)
    keys = _round_keys(key)
    pending = np.ones(values.shape, dtype=bool)
    limit = np.uint64(size)
    while pending.any():  # cycle-walking: re-encrypt until inside [0, size); < 4 rounds expected
        values[pending] = _feistel(values[pending], half_bits, keys)
        pending = values >= limit
    return values.astype(np.int64)


@lru_cache(maxsize=4096)
def stream_key(*parts: int) -> int:
    """One 64-bit key from several small non-negative integers (seed, domain, pass ...)."""
    key = np.uint64(0x243F6A8885A308D3)
    for part in parts:
        key = _mix64(np.asarray([key ^ np.uint64(part & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64))[0]
    return int(key)


class PermutationBlocks:
    """``permuted`` computed ``block`` positions at a time, the ``capacity`` latest blocks cached."""

    def __init__(self, block: int = 4096, capacity: int = 64) -> None:
        self.block = block
        self.capacity = capacity
        self._cache: OrderedDict = OrderedDict()

    def lookup(self, positions: np.ndarray, size: int, key: int) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        result = np.empty(len(positions), dtype=np.int64)
        block_of = positions // self.block
        for block in np.unique(block_of).tolist():
            chosen = block_of == block
            result[chosen] = self._block(block, size, key)[positions[chosen] - block * self.block]
        return result

    def _block(self, block: int, size: int, key: int) -> np.ndarray:
        entry = (key, size, block)
        if entry in self._cache:
            self._cache.move_to_end(entry)
            return self._cache[entry]
        start = block * self.block
        values = permuted(np.arange(start, min(start + self.block, size)), size, key)
        self._cache[entry] = values
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return values
