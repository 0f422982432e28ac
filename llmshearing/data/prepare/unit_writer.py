"""Writing one unit: its documents' tokens concatenated per split and cut into MDS samples.

Each split of a unit gets its own MDS sub-folder ``<domain>/<split>/<unit id>/``; the merge
step joins the sub-folders into the split's ``index.json``. A unit's record (what it holds,
which documents went where) is written after its shards, so a unit without a record was cut
off and is prepared again.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from streaming import MDSWriter

SHARD_SIZE_LIMIT = 1 << 26  # bytes per MDS shard (streaming's default)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every token id (the reference stored uint16 always,
    which breaks Llama-3's and Qwen's vocabularies)."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def token_columns(dtype: np.dtype) -> dict[str, str]:
    return {"tokens": f"ndarray:{np.dtype(dtype).name}"}


@dataclass
class SplitChunker:
    """Concatenates documents and writes every full ``seq_len`` row, up to ``max_rows``."""

    out_dir: Path
    seq_len: int
    dtype: np.dtype
    max_rows: int | None = None
    rows: int = 0
    documents: list = field(default_factory=list)  # [document id, row its first token lands in]
    _pending: list = field(default_factory=list)
    _pending_tokens: int = 0
    _writer: MDSWriter | None = None

    @property
    def full(self) -> bool:
        return self.max_rows is not None and self.rows >= self.max_rows

    def add(self, document_id: str, tokens: np.ndarray) -> None:
        if self.full:
            return
        self.documents.append([document_id, self.rows])
        self._pending.append(tokens)
        self._pending_tokens += len(tokens)
        if self._pending_tokens >= self.seq_len:
            self._write_full_rows()

    def _write_full_rows(self) -> None:
        joined = np.concatenate(self._pending)
        usable = len(joined) // self.seq_len
        if self.max_rows is not None:
            usable = min(usable, self.max_rows - self.rows)
        if usable and self._writer is None:
            self._writer = MDSWriter(out=str(self.out_dir), columns=token_columns(self.dtype),
                                     compression=None, size_limit=SHARD_SIZE_LIMIT)
        for row in joined[:usable * self.seq_len].reshape(usable, self.seq_len):
            self._writer.write({"tokens": row})
        self.rows += usable
        rest = joined[usable * self.seq_len:] if not self.full else joined[:0]
        self._pending, self._pending_tokens = [rest], len(rest)

    def finish(self) -> dict:
        """Close the shards; the incomplete tail is dropped. Returns the split's record."""
        if self._writer is not None:
            self._writer.finish()
        dropped = self._pending_tokens
        self._pending, self._pending_tokens = [], 0
        # a document whose tokens all fell in the dropped tail is in no sample
        kept = [entry for entry in self.documents if entry[1] < self.rows]
        return {"rows": self.rows, "dropped_tail_tokens": int(dropped), "documents": kept}


def write_json_atomically(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    os.replace(staging, path)


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def unit_split_dir(out_dir: Path, domain: str, split: str, unit_id: str) -> Path:
    return Path(out_dir) / domain / split / unit_id


def remove_unit_output(out_dir: Path, domain: str, splits, unit_id: str) -> None:
    for split in splits:
        shutil.rmtree(unit_split_dir(out_dir, domain, split, unit_id), ignore_errors=True)
