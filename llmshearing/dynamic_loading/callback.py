"""Composer callback of dynamic batch loading: measure per-domain losses every ``interval`` steps,
update the domain weights (Sheared LLaMA's rule) and hand them to the train loader.

BATCH_END at steps ``k * interval``: per-domain loss from the loss source; new weights from
:class:`MixtureUpdate` (``update=None``: static mode, weights stay, losses are still logged);
``dataset.publish_weights(step, weights)`` makes them the weights of every batch from the
next one on. Metrics ``dynamic_loading/{weight,loss,excess_loss,samples}/<domain>`` go to
Composer's loggers. AFTER_FORWARD feeds the training batches to the loss source (used by the
``train`` source). FIT_END draws the weights over the run into a PNG and says which domains
were repeated. The weights in force and the sampler counters are checkpointed by the dataset;
this callback's own state (weight history for the plot, loss-source accumulators) by Composer.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmshearing.dynamic_loading.weight_plot import draw_domain_weights
from llmshearing.dynamic_loading.dataset import DynamicMixtureDataset
from llmshearing.dynamic_loading.mixture_update import MixtureUpdate
from llmshearing.errors import ConfigError

log = logging.getLogger(__name__)


class DynamicBatchLoading(Callback):
    def __init__(self, domains: Sequence[str], interval: int, loss_source,
                 update: Optional[MixtureUpdate] = None, plot_path: Optional[str] = None) -> None:
        if interval < 1:
            raise ConfigError(f"dynamic_loading.update_interval must be a positive number of steps, got {interval}")
        self.domains = list(domains)
        self.interval = interval
        self.loss_source = loss_source
        self.update = update
        self.plot_path = plot_path
        self.history_steps: List[int] = []
        self.history_weights: List[List[float]] = []
        self._dataset: Optional[DynamicMixtureDataset] = None

    def fit_start(self, state: State, logger: Logger) -> None:
        dataset = getattr(state.train_dataloader, "dataset", None)
        if not isinstance(dataset, DynamicMixtureDataset):
            raise ConfigError("DynamicBatchLoading needs the dynamic-mixture train loader "
                              "(llmshearing.dynamic_loading.loader.build_dynamic_train_dataloader)")
        if dataset.domains != self.domains:
            raise ConfigError(f"loader domains {dataset.domains} differ from the callback's {self.domains}")
        self._dataset = dataset
        dataset.close(False)
        step = int(state.timestamp.batch)
        if not self.history_steps:
            self._record(step, dataset.current_weights(step))

    def after_forward(self, state: State, logger: Logger) -> None:
        self.loss_source.observe(state)

    def batch_end(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch)
        if step % self.interval:
            return
        losses = self.loss_source.measure(state, step // self.interval)
        weights = self._dataset.current_weights(step - 1)
        metrics = self._per_domain("loss", losses)
        if self.update is not None:
            metrics.update(self._per_domain("excess_loss", self.update.excess_losses(losses)))
            weights = self.update(weights, losses)
            self._dataset.publish_weights(step, weights)
            self._record(step, weights)
        metrics.update(self._per_domain("weight", weights))
        metrics.update(self._per_domain("samples", self._dataset.drawn_counts(step)))
        logger.log_metrics(metrics)

    def fit_end(self, state: State, logger: Logger) -> None:
        if self._dataset is None:
            return
        self._dataset.close()
        if dist.get_global_rank() != 0:
            return
        self._report_repeats(int(state.timestamp.batch))
        if self.plot_path and self.history_steps:
            steps = self.history_steps + [int(state.timestamp.batch)]
            weights = self.history_weights + [self.history_weights[-1]]
            path = draw_domain_weights(steps, np.asarray(weights), self.domains, Path(self.plot_path))
            log.info("domain weights over the run drawn in %s", path)

    def state_dict(self) -> Dict[str, Any]:
        return {"history_steps": list(self.history_steps),
                "history_weights": [list(w) for w in self.history_weights],
                "loss_source": self.loss_source.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.history_steps = list(state.get("history_steps", []))
        self.history_weights = [list(w) for w in state.get("history_weights", [])]
        self.loss_source.load_state_dict(state.get("loss_source", {}))

    # -------------------------------------------------------------------------------------------
    def _record(self, step: int, weights) -> None:
        self.history_steps.append(step)
        self.history_weights.append([float(w) for w in weights])

    def _per_domain(self, name: str, values) -> Dict[str, float]:
        return {f"dynamic_loading/{name}/{domain}": float(value)
                for domain, value in zip(self.domains, values)}

    def _report_repeats(self, step: int) -> None:
        drawn = self._dataset.drawn_counts(step)
        sizes = self._dataset.sampler.sizes
        for domain, count, size in zip(self.domains, drawn, sizes):
            if count > size:
                log.warning("domain '%s' was repeated during the run: %d samples drawn from %d "
                            "(%.1f passes)", domain, count, size, count / size)
