"""Preparing the units of one piece (all of them in a one-process run) into ``out_dir``.

A one-process run stops reading a domain once every split holds its budget; a piece of a
``--num-shards`` run cannot know what the other pieces wrote, so it prepares every unit of
its share in full and the merge applies the budgets. Either way the corpus takes the same
samples: those of the units in their seeded order, up to the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from llmshearing.data.prepare.state import PreparePaths
from llmshearing.data.prepare.tokenizing import ParallelEncoder, batches
from llmshearing.data.prepare.unit_writer import (SplitChunker, read_json, remove_unit_output,
                                                  unit_split_dir, write_json_atomically)
from llmshearing.data.prepare.units import SplitDraw, Unit, document_draw

Log = Callable[[str], None]


@dataclass
class DomainPlan:
    """What to prepare for one domain: its units in the seeded order the corpus takes them."""

    name: str
    units: list[Unit]
    draw: SplitDraw
    budget_rows: dict[str, int | None]  # per split; None = every sample there is
    seed: int


@dataclass
class Progress:
    """Documents and tokens per second, on a tqdm bar (or nothing)."""

    enabled: bool = True

    def __post_init__(self):
        self._bar = None
        self._tokens = 0
        self._started = time.monotonic()
        self._last_postfix = 0.0

    def start(self, domain: str, units: int) -> None:
        self.close()
        if self.enabled:
            from tqdm.auto import tqdm
            self._bar = tqdm(desc=f"{domain} ({units} units)", unit=" docs", dynamic_ncols=True)
        self._tokens, self._started = 0, time.monotonic()

    def advance(self, documents: int, tokens: int) -> None:
        self._tokens += tokens
        if self._bar is None:
            return
        self._bar.update(documents)
        now = time.monotonic()
        if now - self._last_postfix > 0.5:
            self._bar.set_postfix_str(f"{self._tokens / max(now - self._started, 1e-9):,.0f} tokens/s",
                                      refresh=False)
            self._last_postfix = now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def prepare_units(paths: PreparePaths, plan: DomainPlan, units: Sequence[Unit], encoder: ParallelEncoder,
                  seq_len: int, dtype, skip_bad_records: bool, stop_at_budget: bool,
                  progress: Progress, log: Log) -> None:
    """Prepare ``units`` (in this order) unless already recorded; with ``stop_at_budget`` the
    splits take no more than their budget and reading stops once every one is full."""
    splits = list(plan.budget_rows)
    written = {split: 0 for split in splits}
    todo = []
    for unit in units:
        record_path = paths.unit_record(plan.name, unit.id)
        if record_path.is_file():
            record = read_json(record_path)
            for split in splits:
                written[split] += record["splits"][split]["rows"]
        else:
            remove_unit_output(paths.out_dir, plan.name, splits, unit.id)  # cut off by an earlier run
            todo.append(unit)
    if len(todo) < len(units):
        log(f"[{plan.name}] resuming: {len(units) - len(todo)} of {len(units)} units already prepared")

    def remaining(split: str) -> int | None:
        budget = plan.budget_rows[split]
        return None if budget is None or not stop_at_budget else max(budget - written[split], 0)

    def all_full() -> bool:
        return stop_at_budget and all(remaining(split) == 0 for split in splits)

    progress.start(plan.name, len(units))
    state = {"chunkers": None, "bad": None, "documents_read": 0}

    def tagged_batches() -> Iterator[tuple[object, list[str]]]:
        for unit in todo:
            if all_full():
                return
            bad = new_bad_records() if skip_bad_records else None
            yield ("start", unit, bad), []
            for batch in batches(unit.read(bad), text_of=lambda document: document[1]):
                yield ("documents", unit, [document_id for document_id, _ in batch]), [text for _, text in batch]
            yield ("end", unit, bad), []

    for (kind, unit, payload), token_arrays in encoder.map(tagged_batches()):
        if kind == "start":
            if all_full():
                break
            state.update(bad=payload, documents_read=0,
                         chunkers={split: SplitChunker(unit_split_dir(paths.out_dir, plan.name, split, unit.id),
                                                       seq_len, dtype, remaining(split)) for split in splits})
        elif kind == "documents":
            chunkers = state["chunkers"]
            for document_id, tokens in zip(payload, token_arrays):
                chunkers[plan.draw.split_of(document_draw(plan.seed, plan.name, document_id))].add(
                    document_id, tokens)
            state["documents_read"] += len(payload)
            progress.advance(len(payload), sum(len(tokens) for tokens in token_arrays))
            if all(chunker.full for chunker in chunkers.values()):  # each holds the rest of its split's budget
                _finish_unit(paths, plan, unit, state, written, complete=False)
                break
        else:
            _finish_unit(paths, plan, unit, state, written, complete=True)
    progress.close()


def _finish_unit(paths: PreparePaths, plan: DomainPlan, unit: Unit, state: dict, written: dict,
                 complete: bool) -> None:
    splits = {split: chunker.finish() for split, chunker in state["chunkers"].items()}
    for split, record in splits.items():
        written[split] += record["rows"]
    bad = state["bad"]
    write_json_atomically(paths.unit_record(plan.name, unit.id), {
        "unit": unit.id, "members": list(unit.members), "complete": complete,
        "documents_read": state["documents_read"],
        "bad_records": {"count": bad.count, "by_reason": dict(bad.by_reason), "examples": list(bad.examples)}
        if bad is not None else {"count": 0, "by_reason": {}, "examples": []},
        "splits": splits,
    })


def new_bad_records():
    """A fresh counter of skipped records (--skip-bad-records)."""
    from llmshearing.data.document_files import BadRecords
    return BadRecords()
