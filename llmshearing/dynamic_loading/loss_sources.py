"""Where dynamic batch loading gets each domain's current loss from.

- :class:`EvalSplitLoss`: the domains' eval splits (a fixed number of batches each), scored with
  the current model at the update step. The model stays in *train* mode, so a model being pruned
  is scored with sampled hard-concrete masks -- the model that training actually updates -- not
  with the deterministic final-shape masks of eval mode (see docs/ARCHITECTURE.md for why). The
  mask samples come from a generator seeded by (seed, update index) and reseeded for every
  domain: the measurement is reproducible, all domains see the same mask samples, and the
  training run's own random streams (global RNG, the L0 masks' noise stream) are left untouched.
- :class:`TrainBatchLoss`: the training batches' own per-sample losses since the last update
  (no extra forward passes). A domain with no sample in the window -- one whose weight has
  fallen so low that a window draws none of it -- is scored on its eval split instead, exactly
  as :class:`EvalSplitLoss` would: keeping its last measured loss would freeze its weight's
  trend on stale evidence, so a starved domain could never come back however far its real
  loss drifted. Without eval loaders it keeps its last loss (and before any, counts as no
  evidence).

Both reduce (sum of token losses, token count) over ranks, so every rank computes the same
weights.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from composer.core import State
from composer.core.precision import get_precision_context
from composer.utils import dist

from llmshearing.dynamic_loading.domain_loss import domain_loss_sums, sample_token_losses
from llmshearing.model.next_token_loss import LossHeadOutput
from llmshearing.sheared.noise import noise_streams


def _reduced_means(sums: torch.Tensor, counts: torch.Tensor, state: State) -> np.ndarray:
    totals = state.device.tensor_to_device(torch.stack([sums, counts]).double())
    dist.all_reduce(totals)
    sums, counts = totals.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


class EvalSplitLoss:
    def __init__(self, loaders: List, seed: int) -> None:
        self.loaders = loaders
        self.seed = seed

    def observe(self, state: State) -> None:
        """Nothing to collect from training batches."""

    def measure(self, state: State, update_index: int,
                domains: Optional[Sequence[int]] = None) -> np.ndarray:
        """Mean loss of every domain (or of the listed domain indexes, in that order)."""
        loaders = self.loaders if domains is None else [self.loaders[index] for index in domains]
        seed = self.seed * 1_000_003 + update_index
        streams = noise_streams(state.model)

        def reseed(_domain: int) -> None:
            torch.manual_seed(seed)
            for stream in streams:
                stream.restart(seed)

        devices = [torch.cuda.current_device()] if state.device.name == "gpu" else []
        with ExitStack() as preserved, torch.random.fork_rng(devices=devices), get_precision_context(state.precision):
            for stream in streams:
                preserved.enter_context(stream.preserved())
            sums, counts = domain_loss_sums(state.model, loaders, state.device.batch_to_device,
                                            before_domain=reseed)
        return _reduced_means(sums, counts, state)

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Stateless: every measurement reads the eval splits afresh."""


class TrainBatchLoss:
    def __init__(self, num_domains: int, unsampled: Optional[EvalSplitLoss] = None) -> None:
        self.unsampled = unsampled
        self.sums = torch.zeros(num_domains, dtype=torch.float64)
        self.counts = torch.zeros(num_domains, dtype=torch.float64)
        self.last = np.full(num_domains, np.nan)

    def observe(self, state: State) -> None:
        domains = state.batch.get("domain") if isinstance(state.batch, dict) else None
        if domains is None or not isinstance(state.outputs, (torch.Tensor, LossHeadOutput)):
            return
        with torch.no_grad():
            loss_sums, tokens = sample_token_losses(state.outputs, state.batch)
        domains = domains.cpu()
        self.sums.index_add_(0, domains, loss_sums.cpu())
        self.counts.index_add_(0, domains, tokens.cpu())

    def measure(self, state: State, update_index: int) -> np.ndarray:
        losses = _reduced_means(self.sums, self.counts, state)
        missing = np.flatnonzero(~np.isfinite(losses))  # the same on every rank: sums are reduced
        if missing.size and self.unsampled is not None:
            losses[missing] = self.unsampled.measure(state, update_index, missing.tolist())
        self.last = np.where(np.isfinite(losses), losses, self.last)
        self.sums.zero_()
        self.counts.zero_()
        return self.last.copy()

    def state_dict(self) -> Dict[str, Any]:
        return {"sums": self.sums.tolist(), "counts": self.counts.tolist(), "last": self.last.tolist()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state:
            self.sums = torch.tensor(state["sums"], dtype=torch.float64)
            self.counts = torch.tensor(state["counts"], dtype=torch.float64)
            self.last = np.asarray(state["last"], dtype=np.float64)
