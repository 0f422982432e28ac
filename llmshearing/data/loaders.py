"""DataLoaders over a corpus directory: a statically mixed train stream and per-domain eval sets.

Batches are ``{"input_ids": LongTensor[batch_size, seq_len]}``; stored samples longer than
``seq_len`` are cropped to their first ``seq_len`` tokens.

Train data is ONE ``streaming.StreamingDataset`` whose streams are the domains' train splits,
each with its ``proportion`` (static mixing). The streams are read in place (``local`` only, no
``remote``), so several datasets may share the same directories; each dataset registers its
own shared-memory prefix, found by streaming itself, so building many in one process (tests)
needs no cleanup. ``streaming.base.util.clean_stale_shared_memory()`` is deliberately NOT called
here: it unlinks the shared memory of every StreamingDataset on the machine, live ones
included. Eval data needs no shared state and uses ``streaming.LocalDataset`` (map-style).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from composer.utils import dist
from streaming import LocalDataset, StreamingDataLoader, StreamingDataset
from torch.utils.data import DataLoader, Dataset

from llmshearing.data.corpus import CorpusError, check_domains, domain_split_dir, load_manifest
from llmshearing.data.remote import train_stream
from llmshearing.data.shard_errors import unreadable_sample
from llmshearing.errors import ConfigError

_PROPORTION_SUM_TOLERANCE = 1e-6


def normalize_proportions(domains: Sequence[str],
                          proportions: Sequence[float] | None) -> list[float]:
    """Domain weights summing to 1 (uniform when None); warns when they had to be rescaled."""
    if proportions is None:
        return [1.0 / len(domains)] * len(domains)
    values = [float(value) for value in proportions]
    if len(values) != len(domains):
        raise ConfigError(f"got {len(values)} proportions for {len(domains)} domains "
                         f"{list(domains)}")
    if any(not math.isfinite(value) or value < 0 for value in values):
        raise ConfigError(f"proportions must be finite and non-negative, got {values}")
    total = sum(values)
    if total <= 0:
        raise ConfigError(f"proportions must not all be zero, got {values}")
    if abs(total - 1.0) > _PROPORTION_SUM_TOLERANCE:
        warnings.warn(f"domain proportions {values} sum to {total}, not 1; normalising them",
                      stacklevel=2)
    return [value / total for value in values]


def to_model_input(sample: dict[str, Any], seq_len: int, vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """The first ``seq_len`` tokens; ids outside the corpus's vocabulary are refused here, on the
    CPU, where the error can name the data (in the embedding they fail as an index or CUDA assert).
    The stored ids may be any integer dtype (uint16, uint32, int32, int64: see docs/CORPUS_FORMAT.md)."""
    tokens = sample.get("tokens")
    if tokens is None:  # local splits are checked before (validate_mds_dir); remote ones are read as they come
        raise CorpusError(f"the sample has no 'tokens' column (its columns: {sorted(sample)}); "
                          "see docs/CORPUS_FORMAT.md")
    tokens = np.asarray(tokens)
    if tokens.dtype.kind not in "iu":
        raise CorpusError(f"the sample's tokens are {tokens.dtype}, not integer token ids; "
                          "see docs/CORPUS_FORMAT.md")
    if len(tokens) < seq_len:
        raise CorpusError(f"the stored sample has {len(tokens)} tokens, fewer than seq_len={seq_len} (every "
                          "sample must hold the manifest's seq_len tokens; see docs/CORPUS_FORMAT.md)")
    tokens = tokens[:seq_len].astype(np.int64)
    if vocab_size is not None and len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size):
        bad = int(tokens.max()) if tokens.max() >= vocab_size else int(tokens.min())
        raise CorpusError(f"token id {bad} is outside the corpus's vocabulary of {vocab_size} tokens")
    return {"input_ids": torch.from_numpy(tokens)}


class TokenStreamingDataset(StreamingDataset):
    """StreamingDataset of MDS token samples that yields ``{"input_ids": LongTensor[seq_len]}``."""

    def __init__(self, *, seq_len: int, vocab_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seq_len, self.vocab_size = seq_len, vocab_size

    def get_item(self, sample_id: int, retry: int = 7) -> dict[str, torch.Tensor]:
        try:
            return to_model_input(super().get_item(sample_id, retry), self.seq_len, self.vocab_size)
        except Exception as exc:  # noqa: BLE001 - a damaged shard fails in many ways
            raise unreadable_sample(self, sample_id, exc) from exc


class TokenEvalDataset(Dataset):
    """The first ``max_samples`` samples (all when None) of one MDS split, in stored order."""

    def __init__(self, split_dir: Path, seq_len: int, max_samples: int | None = None,
                 vocab_size: int | None = None) -> None:
        self._samples = LocalDataset(local=str(split_dir))
        self._seq_len, self._vocab_size = seq_len, vocab_size
        available = len(self._samples)
        self._length = available if max_samples is None else min(available, max_samples)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self._length:
            raise IndexError(f"sample index {index} out of range [0, {self._length})")
        try:
            return to_model_input(self._samples[index], self._seq_len, self._vocab_size)
        except CorpusError as exc:
            raise CorpusError(f"eval split {self._samples.local}, sample {index}: {exc}") from exc


def checked_manifest(data_dir: str | Path, domains: Sequence[str], seq_len: int) -> dict:
    if not domains:
        raise ConfigError("no domains given")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"domains must be distinct, got {list(domains)}")
    manifest = load_manifest(data_dir)
    check_domains(manifest, list(domains), data_dir)
    if not 0 < seq_len <= int(manifest["seq_len"]):
        raise ConfigError(f"seq_len={seq_len} must be in [1, {manifest['seq_len']}], the sample "
                         f"length stored in corpus {data_dir}")
    return manifest


def open_eval_splits(data_dir: str | Path, domains: Sequence[str], seq_len: int, split: str = "eval",
                     max_samples: int | None = None) -> dict[str, TokenEvalDataset]:
    """Each domain's ``split`` (its first ``max_samples`` samples), in the order of ``domains``,
    refusing token ids outside the vocabulary of the corpus's manifest (checked and read once)."""
    vocab_size = checked_manifest(data_dir, domains, seq_len).get("vocab_size")
    return {domain: TokenEvalDataset(domain_split_dir(data_dir, domain, split), seq_len, max_samples, vocab_size)
            for domain in domains}


def build_train_dataloader(data_dir: str | Path, domains: Sequence[str],
                           proportions: Sequence[float] | None, batch_size: int, seq_len: int,
                           seed: int, num_workers: int = 0,
                           shuffle: bool = True, remote: str | None = None,
                           split: str = "train") -> StreamingDataLoader:
    """Loader over the domains' train splits mixed statically by ``proportions`` (train shards
    local, or streamed from ``remote`` into ``data_dir``)."""
    manifest = checked_manifest(data_dir, domains, seq_len)
    weights = normalize_proportions(domains, proportions)
    streams = [train_stream(data_dir, domain, remote, split, proportion=weight)
               for domain, weight in zip(domains, weights) if weight > 0]
    dataset = TokenStreamingDataset(seq_len=seq_len, vocab_size=manifest.get("vocab_size"), streams=streams,
                                    batch_size=batch_size,
                                    shuffle=shuffle, shuffle_seed=seed)
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                               drop_last=True)


def build_eval_dataloaders(data_dir: str | Path, domains: Sequence[str], batch_size: int,
                           seq_len: int, max_batches: int | None = None,
                           num_workers: int = 0) -> dict[str, DataLoader]:
    """One unshuffled loader per domain over its eval split (at most ``max_batches`` batches).

    With several ranks each reads its share through a ``DistributedSampler`` (Composer refuses
    map-style loaders without one, and the metrics are reduced across ranks anyway).
    """
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"max_batches must be positive or None, got {max_batches}")
    max_samples = None if max_batches is None else max_batches * batch_size
    loaders = {}
    for domain, split in open_eval_splits(data_dir, domains, seq_len, max_samples=max_samples).items():
        sampler = dist.get_sampler(split, shuffle=False) if dist.get_world_size() > 1 else None
        loaders[domain] = DataLoader(split, batch_size=batch_size, shuffle=False, sampler=sampler,
                                     num_workers=num_workers)
    return loaders
