"""Composer callback: the "all" row of the per-domain eval, pooled over tokens like ``evaluate_domains``.

Training runs one evaluator per domain (``eval/<domain>``, Composer's token-weighted
``LanguageCrossEntropy``). After each evaluation round this adds ``metrics/eval/all/...``: the
summed NLL of every evaluated domain over their summed token counts (each token counts once), so
training logs and ``python -m llmshearing.eval`` report the same numbers.
"""
from __future__ import annotations

import math

import torch
from composer.core import Callback, Event, State
from composer.loggers import Logger
from composer.utils import dist

LOSS_METRIC = "LanguageCrossEntropy"
POOLED_LABEL = "eval/all"


class PooledEvalMetrics(Callback):
    def __init__(self) -> None:
        self._nll = 0.0
        self._tokens = 0.0

    def run_event(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.EVAL_BEFORE_ALL:
            self._nll, self._tokens = 0.0, 0.0
        elif event == Event.EVAL_END:
            self._add(state)
        elif event == Event.EVAL_AFTER_ALL and self._tokens > 0:
            loss = self._nll / self._tokens
            logger.log_metrics({f"metrics/{POOLED_LABEL}/{LOSS_METRIC}": loss,
                                f"metrics/{POOLED_LABEL}/LanguagePerplexity": math.exp(min(loss, 700.0))})

    def _add(self, state: State) -> None:
        metric = state.eval_metrics.get(state.dataloader_label, {}).get(LOSS_METRIC)
        if metric is None:
            return
        # the metric's states are this rank's share again after compute(); sum over ranks
        totals = torch.tensor([float(metric.sum_loss), float(metric.total_items)], dtype=torch.float64,
                              device=metric.sum_loss.device)
        dist.all_reduce(totals)
        self._nll += float(totals[0])
        self._tokens += float(totals[1])
