"""Units of work: a domain's inputs cut into groups of files, processed in a seeded order.

A unit is the grain of everything that must come out the same however the work is spread:
its documents are tokenized and concatenated into samples on their own (the incomplete tail
of each unit's split is dropped), its samples land in their own MDS sub-folder, and the
corpus takes units in one seeded order. So ``--num-shards`` pieces that each prepare every
N-th unit, merged, hold exactly the samples one process writes.

Documents go to a split by a hash of (seed, domain, document id), not by position, so the
split of a document never depends on which process read it or what was read before it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

Document = tuple[str, str]  # (document id, text)

DEFAULT_UNIT_BYTES = 64 << 20


@dataclass(frozen=True)
class Unit:
    """Consecutive input files of one domain (or one in-memory document source)."""

    id: str
    members: tuple[str, ...]  # input keys, for the record
    size: int  # bytes on disk
    # read(bad_records): its documents in order; bad_records None means the first bad record raises
    read: Callable[[object], Iterator[Document]] = field(compare=False, repr=False)

    def fingerprint(self) -> list:
        return [self.id, list(self.members), self.size]


def group_into_units(items: Sequence, size_of: Callable[[object], int], key_of: Callable[[object], str],
                     read_items: Callable[[Sequence, object], Iterator[Document]],
                     unit_bytes: int = DEFAULT_UNIT_BYTES) -> list[Unit]:
    """Consecutive items (sorted by key) until each unit holds at least ``unit_bytes``."""
    units: list[Unit] = []
    current: list = []
    for item in sorted(items, key=key_of):
        current.append(item)
        if sum(size_of(member) for member in current) >= unit_bytes:
            units.append(_unit(len(units), current, size_of, key_of, read_items))
            current = []
    if current:
        units.append(_unit(len(units), current, size_of, key_of, read_items))
    return units


def _unit(index: int, members: list, size_of, key_of, read_items) -> Unit:
    members = list(members)
    return Unit(id=f"u{index:05d}", members=tuple(key_of(member) for member in members),
                size=sum(size_of(member) for member in members), read=lambda bad_records: read_items(members, bad_records))


def processing_order(units: Sequence[Unit], seed: int, domain: str) -> list[Unit]:
    """The units in the seeded order the corpus takes them (so a budget smaller than the data
    reads a random subset of the files, not the first ones by name)."""
    ordered = list(units)
    random.Random(f"{seed}:{domain}:units").shuffle(ordered)
    return ordered


def document_draw(seed: int, domain: str, document_id: str) -> float:
    """A uniform number in [0, 1) fixed by the document's id: its split lottery ticket."""
    digest = hashlib.blake2b(f"{seed}\x00{domain}\x00{document_id}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class SplitDraw:
    """Which split a document goes to: eval below ``eval_fraction``, then cpt's share, then train."""

    eval_fraction: float
    cpt_fraction: float = 0.0  # of all documents

    def split_of(self, draw: float) -> str:
        if draw < self.eval_fraction:
            return "eval"
        if draw < self.eval_fraction + self.cpt_fraction:
            return "cpt"
        return "train"


EVAL_POOL_MARGIN = 1.5  # the eval pool is drawn this much larger than eval's share, so eval fills first
MAX_EVAL_FRACTION = 0.5


def split_draw(eval_tokens: int, train_tokens: int | None, cpt_tokens: int | None,
               estimated_tokens: int, eval_fraction: float | None = None) -> SplitDraw:
    """Fractions that fill every split at about the same point of the domain's documents.

    ``estimated_tokens`` (from the input bytes) stands in for a train budget of "all"; an explicit
    ``eval_fraction`` overrides the estimate (a few large documents make the draw coarse). Documents
    drawn into the eval pool after eval is full are left out, never given to train.
    """
    train = train_tokens if train_tokens is not None else max(estimated_tokens - eval_tokens
                                                              - (cpt_tokens or 0), 1)
    total = eval_tokens + train + (cpt_tokens or 0)
    if eval_fraction is None:
        eval_fraction = min(MAX_EVAL_FRACTION, EVAL_POOL_MARGIN * eval_tokens / total)
    cpt_fraction = 0.0 if not cpt_tokens else (1 - eval_fraction) * cpt_tokens / (cpt_tokens + train)
    if cpt_tokens and train_tokens is None:  # train takes the rest: cpt, sized from an estimate, gets eval's margin
        cpt_fraction = min(EVAL_POOL_MARGIN * cpt_fraction, (1 - eval_fraction) / 2)
    return SplitDraw(round(eval_fraction, 12), round(cpt_fraction, 12))
