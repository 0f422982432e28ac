"""Joining prepared units into the corpus: budgets applied, indexes merged, manifest last.

Each split takes the units' samples in the domain's seeded unit order until its budget is
met; the last unit it needs is cut to the samples it needs (copied into ``<unit>-first<N>``)
and the split's ``index.json`` lists the chosen units' shards (mosaicml-streaming's
``merge_index``). Units past the budget stay on disk, unreferenced.
"""

from __future__ import annotations

import logging
import math
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streaming import LocalDataset, MDSWriter
from streaming.base.util import merge_index

from llmshearing.data.corpus import DOCUMENTS_NAME, INDEX_NAME
from llmshearing.data.prepare.state import PrepareError, PreparePaths
from llmshearing.data.prepare.unit_writer import (SHARD_SIZE_LIMIT, read_json, unit_split_dir,
                                                  write_json_atomically)


@dataclass
class SplitSelection:
    """The (unit folder name, rows) a split is made of, in order."""

    parts: list[tuple[str, int]]
    available_rows: int

    @property
    def rows(self) -> int:
        return sum(rows for _, rows in self.parts)


def select_rows(unit_rows: list[tuple[str, int]], budget: int | None) -> SplitSelection:
    parts, taken = [], 0
    for unit_id, rows in unit_rows:
        if budget is not None and taken >= budget:
            break
        take = rows if budget is None else min(rows, budget - taken)
        if take:
            parts.append((unit_id, take))
            taken += take
    return SplitSelection(parts, sum(rows for _, rows in unit_rows))


def short_split_message(domain: str, split: str, selection: SplitSelection, budget: int, seq_len: int,
                        eval_fraction: float, train_surplus: bool) -> str:
    had, asked = selection.available_rows * seq_len, budget * seq_len
    flag = "--eval-tokens" if split == "eval" else f"--{split}-tokens"
    repeat = "" if split == "eval" else ", 'repeat' to repeat its samples up to the budget"
    draw = ""
    if split == "eval" and train_surplus:  # enough text: too few documents fell into the eval pool
        draw = (f"; its documents are few or large for an eval pool of {eval_fraction:.3g} of them: "
                f"a larger --eval-pool-fraction (e.g. {min(0.5, 2 * eval_fraction):.2g}) fills it")
    return (f"domain '{domain}' has {had:,} {split} tokens ({selection.available_rows} samples) of the {asked:,} "
            f"asked{draw}; pass --short-domains cap to use what it has{repeat}, or lower {flag}")


def merge_domain(paths: PreparePaths, domain: str, unit_ids: list[str], splits: dict[str, int | None],
                 seq_len: int, short_policy: str, eval_fraction: float, log) -> dict:
    """Build every split of one domain from its unit records; returns the domain's statistics."""
    records = [read_json(paths.unit_record(domain, unit_id)) for unit_id in unit_ids]
    stats: dict = {"documents_read": sum(record["documents_read"] for record in records),
                   "bad_records": sum(record["bad_records"]["count"] for record in records)}
    documents: dict[str, list[str]] = {}
    for split, budget in splits.items():
        unit_rows = {record["unit"]: record["splits"][split]["rows"] for record in records}  # in the corpus's order
        selection = select_rows(list(unit_rows.items()), budget)
        if selection.available_rows == 0:
            pool = (f", a larger --eval-pool-fraction (now {eval_fraction:.3g})" if split == "eval" else "")
            raise PrepareError(f"domain '{domain}' gives no complete {split} sample of {seq_len} tokens "
                               f"({stats['documents_read']} documents read); give it more text{pool}, "
                               "or lower --seq-len")
        if budget is not None and selection.rows < budget:
            if short_policy == "error":
                train_rows = sum(record["splits"]["train"]["rows"] for record in records)
                surplus = splits["train"] is None or train_rows >= splits["train"]
                raise PrepareError(short_split_message(domain, split, selection, budget, seq_len, eval_fraction,
                                                       surplus))
            log(f"[{domain}] {split}: {selection.rows * seq_len:,} tokens of the {budget * seq_len:,} asked"
                f" ({'repeated up to the budget' if short_policy == 'repeat' and split != 'eval' else 'capped'})")
        split_dir = paths.out_dir / domain / split
        folders = [_materialize(split_dir, unit_id, rows, unit_rows[unit_id]) for unit_id, rows in selection.parts]
        repeats = 0
        if short_policy == "repeat" and split != "eval" and budget is not None and selection.rows < budget:
            repeats = math.ceil(budget / selection.rows) - 1
            folders += _repeat(split_dir, folders, selection, budget)
        _write_index(split_dir, folders)
        documents[split] = _selected_documents(records, split, selection)
        stats[split] = {"documents": len(documents[split]), "samples": budget if repeats else selection.rows,
                        "tokens": (budget if repeats else selection.rows) * seq_len}
        if repeats:
            stats[split]["repeated_from_samples"] = selection.rows
    write_json_atomically(paths.out_dir / domain / DOCUMENTS_NAME, documents)
    return stats


def _materialize(split_dir: Path, unit_id: str, rows: int, unit_rows: int) -> str:
    """The folder holding exactly ``rows`` samples of the unit: itself, or a copy of its first rows."""
    if rows == unit_rows:
        return unit_id
    name = f"{unit_id}-first{rows}"
    _copy_rows(split_dir / unit_id, split_dir / name, range(rows))
    return name


def _repeat(split_dir: Path, folders: list[str], selection: SplitSelection, budget: int) -> list[str]:
    """Copies of the split's samples, cycled, until it holds ``budget`` samples."""
    added, have, copy = [], selection.rows, 1
    while have < budget:
        for folder, rows in zip(folders, [rows for _, rows in selection.parts]):
            take = min(rows, budget - have)
            if take <= 0:
                break
            name = f"repeat{copy}-{folder}"
            _copy_rows(split_dir / folder, split_dir / name, range(take))
            added.append(name)
            have += take
        copy += 1
    return added


def _copy_rows(source: Path, target: Path, indices: range) -> None:
    shutil.rmtree(target, ignore_errors=True)
    samples = LocalDataset(local=str(source))
    columns = read_json(source / INDEX_NAME)["shards"][0]
    with MDSWriter(out=str(target), columns=dict(zip(columns["column_names"], columns["column_encodings"])),
                   compression=None, size_limit=SHARD_SIZE_LIMIT) as writer:
        for index in indices:
            writer.write({"tokens": samples[index]["tokens"]})


@contextmanager
def _quiet_streaming_warnings():
    """merge_index warns on the root logger about its temporary folder at every call."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _write_index(split_dir: Path, folders: list[str]) -> None:
    (split_dir / INDEX_NAME).unlink(missing_ok=True)
    with _quiet_streaming_warnings():
        merge_index([str(split_dir / folder / INDEX_NAME) for folder in folders], str(split_dir))


def _selected_documents(records: list[dict], split: str, selection: SplitSelection) -> list[str]:
    taken = dict(selection.parts)
    chosen = []
    for record in records:
        rows = taken.get(record["unit"], 0)
        chosen.extend(document_id for document_id, first_row in record["splits"][split]["documents"]
                      if first_row < rows)
    return chosen
