"""Domain loading weights per update window, in shared memory.

Dataloader workers are forked when iteration starts and never see later attribute changes made
in the main process; they read this table instead. Window ``k`` covers the global steps
``[k * interval, (k + 1) * interval)``. The main process publishes window ``k`` at the end of
step ``k * interval`` (a Composer callback); a worker that reaches the first batch of a window
that is not published yet waits for it. Every batch is therefore drawn with exactly the weights
computed for its window, however far ahead the workers prefetch, and the wait costs one batch
of prefetch at each update.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np
import torch

from llmshearing.errors import ConfigError

_POLL_SECONDS = 0.002


class WeightsNotPublishedError(RuntimeError):
    pass


class WeightTable:
    def __init__(self, initial_weights, interval: Optional[int], max_steps: int,
                 wait_timeout_s: float = 3600.0) -> None:
        """``interval=None``: static weights (one window, never updated)."""
        if interval is not None and interval < 1:
            raise ConfigError(f"update interval must be a positive number of steps, got {interval}")
        self.interval = interval
        capacity = 1 if interval is None else max_steps // interval + 1
        initial = torch.as_tensor(np.asarray(initial_weights, dtype=np.float64))
        # share_memory_() makes forked and spawned workers alike see the main process's writes
        self._weights = torch.zeros(capacity, len(initial), dtype=torch.float64).share_memory_()
        self._published = torch.zeros(1, dtype=torch.int64).share_memory_()  # windows < this are set
        self._closed = torch.zeros(1, dtype=torch.bool).share_memory_()  # set: waiting workers stop
        self.wait_timeout_s = wait_timeout_s
        self.reset(0, initial)

    @property
    def capacity(self) -> int:
        return self._weights.shape[0]

    def window_of(self, step: int) -> int:
        return 0 if self.interval is None else step // self.interval

    def reset(self, window: int, weights) -> None:
        """Start (or resume) at ``window`` with ``weights``; later windows are unpublished."""
        self._check_capacity(window)
        self._weights[window] = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self._published[0] = window + 1

    def publish(self, window: int, weights) -> None:
        """Set the weights of ``window`` (the next unpublished one)."""
        published = int(self._published[0])
        if window != published:
            raise RuntimeError(f"weights of window {window} published out of order "
                               f"(next expected: {published})")
        self._check_capacity(window)
        self._weights[window] = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        self._published[0] = window + 1  # written after the row: readers check this flag first

    def close(self, closed: bool = True) -> None:
        """Release workers waiting for weights that will never come (the run has ended)."""
        self._closed[0] = closed

    def weights_at(self, step: int, wait: bool = False) -> Optional[np.ndarray]:
        """The weights in force at ``step``; None when the table was closed while waiting."""
        window = self.window_of(step)
        if window >= int(self._published[0]):
            if not wait:
                raise WeightsNotPublishedError(
                    f"domain weights for step {step} (window {window}) were never published: "
                    "dynamic loading needs its Composer callback (llmshearing.dynamic_loading.DynamicBatchLoading)")
            if not self._wait_for(window):
                return None
        return self._weights[window].numpy().copy()

    def _wait_for(self, window: int) -> bool:
        parent, deadline = os.getppid(), time.monotonic() + self.wait_timeout_s
        while window >= int(self._published[0]):
            if bool(self._closed[0]):
                return False
            if os.getppid() != parent:
                raise WeightsNotPublishedError("the training process exited while a dataloader "
                                               "worker waited for new domain weights")
            if time.monotonic() > deadline:
                raise WeightsNotPublishedError(
                    f"no domain weights for window {window} after {self.wait_timeout_s:.0f} s: "
                    "is the DynamicBatchLoading callback registered with the Trainer?")
            time.sleep(_POLL_SECONDS)
        return True

    def _check_capacity(self, window: int) -> None:
        if window >= self.capacity:
            raise ConfigError(f"dynamic loading was sized for {self.capacity} weight windows "
                              f"(max_duration / update_interval); window {window} is beyond it: "
                              "set max_duration to the real length of the run")
