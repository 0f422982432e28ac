"""Tokenizing documents, in order, across worker processes, with bounded memory.

``multiprocessing.Pool.imap`` would read the whole input ahead of the workers (its task feeder
drains the iterator), so the batches in flight are bounded here by hand.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from llmshearing.errors import LLMShearingError

DOCUMENT_SEPARATOR_TOKEN = "<|endoftext|>"
BATCH_DOCUMENTS = 256
BATCH_CHARACTERS = 1 << 20
IN_FLIGHT_PER_WORKER = 4

Item = TypeVar("Item")


class TokenizerError(LLMShearingError):
    """The tokenizer cannot mark documents (no separator) or cannot be used."""


def document_separator(tokenizer) -> tuple[int, str]:
    """The token put after every document: ``<|endoftext|>`` when the vocab has it, else eos."""
    vocab = tokenizer.get_vocab()
    if DOCUMENT_SEPARATOR_TOKEN in vocab:
        return vocab[DOCUMENT_SEPARATOR_TOKEN], DOCUMENT_SEPARATOR_TOKEN
    if tokenizer.eos_token_id is None:
        raise TokenizerError(f"the tokenizer has neither {DOCUMENT_SEPARATOR_TOKEN} nor an eos token to put "
                             "between documents; use the model's own tokenizer")
    return tokenizer.eos_token_id, tokenizer.eos_token


def document_prefix(tokenizer) -> list[int]:
    """The tokens the tokenizer itself puts before a text (LLaMA's BOS; none for GPT-2 style):
    documents start the way the model saw them in pre-training."""
    probe = "Hello world"
    with_specials = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start:start + len(plain)] == plain:
            return with_specials[:start]
    return []


class DocumentEncoder:
    """Texts -> token ids of ``prefix + text + separator`` per document (picklable for workers)."""

    def __init__(self, tokenizer, dtype: np.dtype):
        self.tokenizer = tokenizer
        # Documents are cut into samples afterwards, so a text longer than the model's context is
        # expected; this keeps transformers from warning that it is.
        self.tokenizer.model_max_length = sys.maxsize
        self.dtype = np.dtype(dtype)
        self.prefix = document_prefix(tokenizer)
        self.separator_id, self.separator = document_separator(tokenizer)

    def __call__(self, texts: Sequence[str]) -> list[np.ndarray]:
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        prefix, suffix = self.prefix, [self.separator_id]
        return [np.asarray(prefix + ids + suffix, dtype=self.dtype) for ids in encoded]


def batches(documents: Iterable[Item], text_of: Callable[[Item], str]) -> Iterator[list[Item]]:
    """Consecutive documents, at most BATCH_DOCUMENTS or about BATCH_CHARACTERS of text each."""
    batch: list[Item] = []
    characters = 0
    for document in documents:
        batch.append(document)
        characters += len(text_of(document))
        if len(batch) >= BATCH_DOCUMENTS or characters >= BATCH_CHARACTERS:
            yield batch
            batch, characters = [], 0
    if batch:
        yield batch


_worker_encoder: DocumentEncoder | None = None


def _start_worker(encoder: DocumentEncoder) -> None:
    global _worker_encoder
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _worker_encoder = encoder


def _encode_in_worker(texts: list[str]) -> list[np.ndarray]:
    return _worker_encoder(texts)


@contextmanager
def _workers_start_with_default_sigterm() -> Iterator[None]:
    """Fork the workers with SIGTERM's default action, so ``Pool.terminate()`` always stops them.

    Composer installs a Python-level SIGTERM handler at import. A forked worker inherits it, and
    CPython drops a signal that arrives before the child finished its after-fork setup; a worker
    still starting when the run ends at once (nothing left to do on resume, an input error at the
    first record) then waited for tasks forever and ``terminate()`` hung joining it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ParallelEncoder:
    """Encodes batches of texts in ``workers`` processes (in this process when 1), in input order,
    holding at most ``IN_FLIGHT_PER_WORKER`` batches per worker."""

    def __init__(self, encoder: DocumentEncoder, workers: int):
        self.encoder, self.workers = encoder, workers
        self._pool = None

    def __enter__(self) -> "ParallelEncoder":
        if self.workers > 1:
            context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
            with _workers_start_with_default_sigterm():
                self._pool = context.Pool(self.workers, initializer=_start_worker, initargs=(self.encoder,))
        return self

    def __exit__(self, *exc_info) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def map(self, tagged_batches: Iterable[tuple[object, list[str]]]) -> Iterator[tuple[object, list[np.ndarray]]]:
        """(tag, texts) -> (tag, token arrays), in order; an empty batch passes through as a marker."""
        if self._pool is None:
            for tag, texts in tagged_batches:
                yield tag, self.encoder(texts) if texts else []
            return
        pending: deque = deque()
        limit = self.workers * IN_FLIGHT_PER_WORKER
        for tag, texts in tagged_batches:
            pending.append((tag, self._pool.apply_async(_encode_in_worker, (texts,)) if texts else None))
            if len(pending) >= limit:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    @staticmethod
    def _result(tag, result) -> tuple[object, list[np.ndarray]]:
        return tag, ([] if result is None else result.get())
