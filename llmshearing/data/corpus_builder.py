"""Build a tokenized multi-domain corpus as streaming MDS shards.

Layout written under ``out_dir``::

    <domain>/train/   MDS shards, column {"tokens": "ndarray:int32"}, each sample seq_len tokens
    <domain>/eval/    same, from held-out documents (no document is in both splits)
    <domain>/documents.json   ids of the documents in each split
    manifest.json     written last: its presence marks the corpus as complete

Documents of a domain are sorted by id, shuffled with a seeded RNG, and then dealt out: eval
takes documents until its token budget is full, train takes the rest until its budget is full.
Within a split, documents are concatenated with the separator token after each one and cut
into seq_len chunks (the incomplete tail is dropped).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from streaming import MDSWriter

from llmshearing.data.corpus import DOCUMENTS_NAME, MANIFEST_NAME, SPLITS
from llmshearing.data.fetch import DEFAULT_CACHE_DIR, fetch_package_tree
from llmshearing.data.sources import DOMAIN_SOURCES, Document, DomainSource

MANIFEST_FORMAT_VERSION = 1
DOCUMENT_SEPARATOR_TOKEN = "<|endoftext|>"
TOKEN_COLUMNS = {"tokens": "ndarray:int32"}
SHARD_SIZE_LIMIT = 1 << 22  # bytes per MDS shard
_TOKENIZE_BATCH = 32  # documents per tokenizer call

Log = Callable[[str], None]


class CorpusBuildError(RuntimeError):
    """The corpus could not be built (bad arguments, or a domain has too little text)."""


@dataclass(frozen=True)
class BuildOptions:
    seq_len: int = 512
    max_train_tokens: int = 1_500_000
    max_eval_tokens: int = 60_000
    seed: int = 1234

    def validate(self) -> None:
        if self.seq_len < 2:
            raise CorpusBuildError(f"seq_len must be at least 2, got {self.seq_len}")
        for name in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) < self.seq_len:
                raise CorpusBuildError(f"{name} ({getattr(self, name)}) must be at least "
                                       f"seq_len ({self.seq_len})")


@dataclass
class SplitStats:
    documents: int = 0
    tokens: int = 0
    samples: int = 0


class _ChunkWriter:
    """Concatenates documents (separator after each) and writes full seq_len chunks."""

    def __init__(self, out_dir: Path, seq_len: int, max_samples: int, separator_id: int):
        self._writer = MDSWriter(out=str(out_dir), columns=TOKEN_COLUMNS, compression=None,
                                 size_limit=SHARD_SIZE_LIMIT)
        self._seq_len = seq_len
        self._max_samples = max_samples
        self._separator = np.array([separator_id], dtype=np.int32)
        self._pending = np.zeros(0, dtype=np.int32)
        self.stats = SplitStats()
        self.document_ids: list[str] = []

    @property
    def full(self) -> bool:
        return self.stats.samples >= self._max_samples

    def add_document(self, document_id: str, token_ids: Sequence[int]) -> None:
        self.document_ids.append(document_id)
        self.stats.documents += 1
        tokens = np.asarray(token_ids, dtype=np.int32)
        self._pending = np.concatenate([self._pending, tokens, self._separator])
        while len(self._pending) >= self._seq_len and not self.full:
            self._writer.write({"tokens": self._pending[:self._seq_len]})
            self._pending = self._pending[self._seq_len:]
            self.stats.samples += 1
            self.stats.tokens += self._seq_len

    def finish(self) -> SplitStats:
        self._writer.finish()
        return self.stats


def document_separator(tokenizer) -> tuple[int, str]:
    """The token put between documents: ``<|endoftext|>`` when the vocab has it, else eos."""
    vocab = tokenizer.get_vocab()
    if DOCUMENT_SEPARATOR_TOKEN in vocab:
        return vocab[DOCUMENT_SEPARATOR_TOKEN], DOCUMENT_SEPARATOR_TOKEN
    if tokenizer.eos_token_id is None:
        raise CorpusBuildError(f"tokenizer has neither {DOCUMENT_SEPARATOR_TOKEN} nor an eos token")
    return tokenizer.eos_token_id, tokenizer.eos_token


def _shuffled(documents: list[Document], seed: int, domain: str) -> list[Document]:
    shuffled = list(documents)
    random.Random(f"{seed}:{domain}").shuffle(shuffled)
    return shuffled


def _tokenized(documents: Iterable[Document], tokenizer) -> Iterator[tuple[str, list[int]]]:
    """(document id, token ids) pairs, tokenized lazily in small batches."""
    batch: list[Document] = []
    for document in documents:
        batch.append(document)
        if len(batch) == _TOKENIZE_BATCH:
            yield from _tokenize_batch(batch, tokenizer)
            batch = []
    yield from _tokenize_batch(batch, tokenizer)


def _tokenize_batch(batch: list[Document], tokenizer) -> Iterator[tuple[str, list[int]]]:
    if batch:
        token_ids = tokenizer([text for _, text in batch], add_special_tokens=False)["input_ids"]
        yield from zip((document_id for document_id, _ in batch), token_ids)


def write_domain_splits(documents: list[Document], tokenizer, separator_id: int,
                        out_dir: Path, options: BuildOptions, domain: str) -> dict[str, SplitStats]:
    """Tokenize, split and write one domain's documents into ``out_dir/{train,eval}``.

    Also writes ``out_dir/documents.json`` with the ids of the documents in each split.
    """
    writers = {
        "eval": _ChunkWriter(out_dir / "eval", options.seq_len,
                             options.max_eval_tokens // options.seq_len, separator_id),
        "train": _ChunkWriter(out_dir / "train", options.seq_len,
                              options.max_train_tokens // options.seq_len, separator_id),
    }
    for document_id, token_ids in _tokenized(_shuffled(documents, options.seed, domain), tokenizer):
        target = writers["eval"] if not writers["eval"].full else writers["train"]
        if target.full:
            break
        if token_ids:
            target.add_document(document_id, token_ids)
    stats = {split: writer.finish() for split, writer in writers.items()}
    _write_json_atomically(out_dir / DOCUMENTS_NAME,
                           {split: writers[split].document_ids for split in SPLITS})
    for split in SPLITS:
        if stats[split].samples == 0:
            raise CorpusBuildError(f"domain '{domain}': {len(documents)} documents give no "
                                   f"complete {split} sample of {options.seq_len} tokens")
    return stats


def _build_domain(source: DomainSource, tokenizer, separator_id: int, out_dir: Path,
                  options: BuildOptions, cache_dir: Path, log: Log) -> dict:
    started = time.monotonic()
    trees = []
    for package in source.packages:
        log(f"[{source.name}] fetching {package.label}")
        trees.append(fetch_package_tree(package, cache_dir))
    documents = list(source.read_documents(trees))
    log(f"[{source.name}] {len(documents)} documents read; tokenizing")
    staging = out_dir / f"{source.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        stats = write_domain_splits(documents, tokenizer, separator_id, staging, options,
                                    source.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = out_dir / source.name
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    log(f"[{source.name}] train {stats['train'].samples} samples ({stats['train'].tokens} tokens, "
        f"{stats['train'].documents} docs), eval {stats['eval'].samples} samples "
        f"({stats['eval'].tokens} tokens, {stats['eval'].documents} docs) "
        f"in {time.monotonic() - started:.1f}s")
    return {
        "description": source.description,
        "sources": [package.as_manifest_entry() for package in source.packages],
        "documents_available": len(documents),
        **{split: asdict(stats[split]) for split in SPLITS},
    }


def _write_json_atomically(path: Path, payload: dict) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, path)


def build_corpus(out_dir: Path, options: BuildOptions, tokenizer, tokenizer_description: str,
                 cache_dir: Path = DEFAULT_CACHE_DIR,
                 sources: Sequence[DomainSource] = DOMAIN_SOURCES, log: Log = print) -> dict:
    """Build every domain of ``sources`` into ``out_dir`` and write the manifest; returns it."""
    options.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # the corpus is incomplete until rewritten
    separator_id, separator_token = document_separator(tokenizer)
    per_domain = {source.name: _build_domain(source, tokenizer, separator_id, out_dir, options,
                                             Path(cache_dir), log)
                  for source in sources}
    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "domains": list(per_domain),
        "seq_len": options.seq_len,
        "tokenizer": tokenizer_description,
        "vocab_size": len(tokenizer),
        "eos_token_id": separator_id,
        "eos_token": separator_token,
        "columns": TOKEN_COLUMNS,
        "seed": options.seed,
        "max_train_tokens_per_domain": options.max_train_tokens,
        "max_eval_tokens_per_domain": options.max_eval_tokens,
        "per_domain": per_domain,
    }
    _write_json_atomically(out_dir / MANIFEST_NAME, manifest)
    return manifest
