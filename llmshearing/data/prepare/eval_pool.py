"""Sizing a domain's eval pool from its documents, so eval fills whenever the domain has the text.

The default pool (``units.split_draw``) is sized from token counts alone: eval's share of the
budgets, times a margin. On a domain of few or uneven documents the documents whose draw falls
in it can hold far less than that share (150 licence files, 20k eval tokens asked: 17,920 came).
So a domain small enough to read up front (``SCAN_TOKENS``) is read once before it is prepared:
its documents in the order of their split draw, tokenized in that order until eval holds its
samples, counted the way the units cut them (each unit's incomplete tail dropped). The pool
becomes the smallest one that fills eval, when that is larger than the default. Documents are
still split by their draw alone, so train and eval stay disjoint and the pool depends only on
the documents and the seed (every ``--num-shards`` piece and every resume finds the same one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from llmshearing.data.prepare.pieces import new_bad_records
from llmshearing.data.prepare.tokenizing import BATCH_DOCUMENTS, DocumentEncoder
from llmshearing.data.prepare.units import MAX_EVAL_FRACTION, Unit, document_draw

# a domain estimated at more tokens than this (about 256 MB of text) keeps the default pool: its
# documents are many, and reading it twice would cost
SCAN_TOKENS = 64_000_000


@dataclass(frozen=True)
class EvalPoolScan:
    """The smallest pool that fills eval (``fraction``; None when even ``MAX_EVAL_FRACTION`` of the
    documents does not) and the eval samples that pool gives."""

    fraction: float | None
    rows: int
    documents: int


def scan_eval_pool(units: Sequence[Unit], seed: int, domain: str, encoder: DocumentEncoder, seq_len: int,
                   eval_rows: int, skip_bad_records: bool) -> EvalPoolScan:
    """Read ``units`` and find the smallest draw threshold whose documents give ``eval_rows`` samples."""
    candidates = []  # (draw, unit index, text) of the documents a pool may hold
    documents = 0
    for index, unit in enumerate(units):
        for document_id, text in unit.read(new_bad_records() if skip_bad_records else None):
            documents += 1
            draw = document_draw(seed, domain, document_id)
            if draw < MAX_EVAL_FRACTION:
                candidates.append((draw, index, text))
    candidates.sort(key=lambda candidate: candidate[:2])
    unit_tokens, rows = [0] * len(units), 0
    for start in range(0, len(candidates), BATCH_DOCUMENTS):
        batch = candidates[start:start + BATCH_DOCUMENTS]
        for (draw, index, _), tokens in zip(batch, encoder([text for _, _, text in batch])):
            rows -= unit_tokens[index] // seq_len
            unit_tokens[index] += len(tokens)
            rows += unit_tokens[index] // seq_len
            if rows >= eval_rows:
                return EvalPoolScan(_just_above(draw), rows, documents)
    return EvalPoolScan(None, rows, documents)


def _just_above(draw: float) -> float:
    """The next threshold above ``draw`` on the 12-digit grid ``SplitDraw`` fractions are kept on."""
    return (math.floor(draw * 1e12) + 1) / 1e12
