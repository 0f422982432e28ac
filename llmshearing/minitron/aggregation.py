"""Reduce per-token activation scores to one score per unit: first over the sequence, then over
the calibration samples (the Minitron paper's best pair is mean over sequence, L2 over batch).

Sample-level reductions are streamed: only running sums and sums of squares are kept, so the
calibration set can be any size.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

from llmshearing.errors import ConfigError
from llmshearing.minitron.choices import AGGREGATIONS


SEQUENCE_REDUCTIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda values: values.mean(dim=1),
    "l2": lambda values: values.norm(dim=1),
    "var": lambda values: values.var(dim=1, unbiased=False),
}


def check_aggregation(name: str, what: str) -> str:
    if name not in AGGREGATIONS:
        raise ConfigError(f"unknown {what} aggregation '{name}'; choose from {list(AGGREGATIONS)}")
    return name


def reduce_sequence(values: torch.Tensor, name: str) -> torch.Tensor:
    """[batch, seq, units] -> [batch, units]."""
    return SEQUENCE_REDUCTIONS[name](values.float())


class SampleAccumulator:
    """Running reduction over samples of [batch, units] rows: mean, L2 norm or variance."""

    def __init__(self):
        self.total = None
        self.squares = None
        self.count = 0

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().double()
        if self.total is None:
            self.total = torch.zeros(rows.shape[1:], dtype=torch.float64, device=rows.device)
            self.squares = torch.zeros_like(self.total)
        self.total += rows.sum(dim=0)
        self.squares += rows.pow(2).sum(dim=0)
        self.count += rows.shape[0]

    def result(self, name: str) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("no samples were accumulated")
        mean = self.total / self.count
        if name == "mean":
            out = mean
        elif name == "l2":
            out = self.squares.sqrt()
        else:
            out = (self.squares / self.count - mean.pow(2)).clamp(min=0)
        return out.float().cpu()
