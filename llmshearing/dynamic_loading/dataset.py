"""The dynamic-mixture train dataset: an endless stream of ``{"input_ids", "domain"}`` samples.

Samples are read by random access from one mosaicml-streaming ``StreamingDataset`` holding one
``Stream`` per domain (local or remote MDS; streaming downloads and caches shards). Which
samples are read is decided by :class:`MixtureSampler` from the weights in a shared
:class:`WeightTable`, so the order is a pure function of the seed and the published weights.

Rank ``r`` of ``R`` serves positions ``[r*B, (r+1)*B)`` of every global batch (``B = G / R``);
dataloader worker ``w`` of ``W`` serves the steps ``start + w, start + w + W, ...`` in the same
round-robin order in which ``torch.utils.data.DataLoader`` collects batches from its workers.

Checkpoints: Composer calls ``state_dict(num_samples, from_beginning)`` and
``load_state_dict(state)`` on the train dataset. The state is O(domains): step, per-domain
counters, the weights in force, seed and domain names. The main process keeps its own cursor
(a "ledger") that it advances, by replaying the cheap domain draws, to the step Composer names.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
from streaming import StreamingDataset
from torch.utils.data import IterableDataset, get_worker_info

from llmshearing.data.loaders import to_model_input
from llmshearing.dynamic_loading.mixture_sampler import MixtureCursor, MixtureSampler, iterate_draws
from llmshearing.data.shard_errors import unreadable_sample
from llmshearing.dynamic_loading.weight_table import WeightTable
from llmshearing.errors import ConfigError

STATE_FORMAT = "llmshearing.dynamic_mixture/1"


class DynamicMixtureDataset(IterableDataset):
    def __init__(self, reader: StreamingDataset, domains: Sequence[str], sampler: MixtureSampler,
                 table: WeightTable, seq_len: int, vocab_size: int | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        if sampler.global_batch_size % world_size:
            raise ConfigError(f"global batch size {sampler.global_batch_size} is not divisible "
                              f"by {world_size} ranks")
        if len(domains) != sampler.num_domains:
            raise ConfigError(f"{len(domains)} domains but {sampler.num_domains} domain sizes")
        self.reader = reader
        self.domains = list(domains)
        self.sampler = sampler
        self.table = table
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self.rank = rank
        self.local_batch_size = sampler.global_batch_size // world_size
        self._offsets = np.asarray(reader.sample_offset_per_stream, dtype=np.int64)
        self._start = MixtureCursor.start(len(self.domains))  # where a new iterator begins
        self._ledger = self._start.copy()  # main process: counters at the last step it was told of

    # ---- iteration (dataloader workers, or the main process with num_workers=0) ---------------
    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        cursor = self._start.copy()
        first_step = cursor.step
        passes = self.sampler.passes_started(cursor.drawn)
        weights_at = functools.partial(self.table.weights_at, wait=info is not None)
        for step, draw in iterate_draws(self.sampler, cursor, weights_at):
            if (step - first_step) % num_workers == worker:
                yield from self._read(draw.domains, draw.draw_numbers)
            if worker == 0 and self.rank == 0:
                passes = self._warn_on_repeats(passes, cursor.drawn)

    def _read(self, domains: np.ndarray, draw_numbers: np.ndarray) -> Iterator[Dict[str, Any]]:
        mine = slice(self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size)
        domains, draw_numbers = domains[mine], draw_numbers[mine]
        sample_ids = self._offsets[domains] + self.sampler.sample_indices(domains, draw_numbers)
        for domain, sample_id in zip(domains.tolist(), sample_ids.tolist()):
            try:
                sample = to_model_input(self.reader.get_item(sample_id), self.seq_len, self.vocab_size)
            except Exception as exc:  # noqa: BLE001 - a damaged shard fails in many ways
                raise unreadable_sample(self.reader, sample_id, exc) from exc
            sample["domain"] = domain  # collated into a LongTensor [batch]
            yield sample

    def _warn_on_repeats(self, passes: np.ndarray, drawn: np.ndarray) -> np.ndarray:
        now = self.sampler.passes_started(drawn)
        for index in np.flatnonzero(now > np.maximum(passes, 1)):
            size = int(self.sampler.sizes[index])
            warnings.warn(f"domain '{self.domains[index]}' ran out of its {size} samples and is "
                          f"repeated (re-shuffled): pass {now[index]}, i.e. repeated "
                          f"{now[index] - 1} time(s) so far", stacklevel=2)
        return now

    # ---- main process: weights and checkpoint state ---------------------------------------------
    def close(self, closed: bool = True) -> None:
        """At the end of a run: workers waiting for weights that will never come stop iterating."""
        self.table.close(closed)

    def current_weights(self, step: int) -> np.ndarray:
        """Weights in force for the batch at global step ``step`` (0-based)."""
        return self.table.weights_at(step)

    def publish_weights(self, step: int, weights) -> None:
        """Weights for the batches from global step ``step`` on (``step`` = batches done)."""
        if self.table.interval is None:
            raise RuntimeError("a static mixture's weights never change")
        window = self.table.window_of(step)
        if window * self.table.interval != step:
            raise RuntimeError(f"weights can only change at multiples of the update interval "
                               f"{self.table.interval}, not at step {step}")
        self._advance_ledger(step)  # the steps before `step` are drawn with the old weights
        self.table.publish(window, weights)

    def drawn_counts(self, step: int) -> np.ndarray:
        """Samples drawn per domain (all ranks) in the first ``step`` global batches."""
        return self._advance_ledger(step).drawn.copy()

    def _advance_ledger(self, step: int) -> MixtureCursor:
        if step < self._ledger.step:
            raise RuntimeError(f"data-loader ledger is at step {self._ledger.step}, cannot go back "
                               f"to {step}")
        while self._ledger.step < step:
            draw = self.sampler.draw(self._ledger, self.table.weights_at(self._ledger.step))
            self.sampler.advance(self._ledger, draw)
        return self._ledger

    def state_dict(self, num_samples: int, from_beginning: bool = True) -> Dict[str, Any]:
        if not from_beginning:
            num_samples += self._start.step * self.sampler.global_batch_size
        step, remainder = divmod(int(num_samples), self.sampler.global_batch_size)
        if remainder:
            raise RuntimeError(f"{num_samples} samples is not a whole number of global batches "
                               f"of {self.sampler.global_batch_size}")
        ledger = self._advance_ledger(step)
        return {
            "format": STATE_FORMAT,
            "domains": self.domains,
            "seed": self.sampler.seed,
            "global_batch_size": self.sampler.global_batch_size,
            "step": step,
            "drawn": ledger.drawn.tolist(),
            "weights": self.table.weights_at(step).tolist(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        _check_state(state, self.domains, self.sampler)
        self._start = MixtureCursor(int(state["step"]), np.asarray(state["drawn"], dtype=np.int64))
        self._ledger = self._start.copy()
        self.table.reset(self.table.window_of(self._start.step), state["weights"])


def _check_state(state: Any, domains: List[str], sampler: MixtureSampler) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError("the checkpoint's data-loader state was not written by dynamic loading "
                          "(static mixture?); resume with the same data settings, or set "
                          "load_weights_only=true to start a new data order")
    expected = {"domains": domains, "seed": sampler.seed,
                "global_batch_size": sampler.global_batch_size}
    for key, ours in expected.items():
        if state[key] != ours:
            raise ConfigError(f"the checkpoint's data order was drawn with {key}={state[key]}, "
                              f"this run has {ours}; use the same value to resume, or "
                              "load_weights_only=true")
