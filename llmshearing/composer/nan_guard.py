"""Stop a run at the first non-finite loss, before the bad step can touch weights or checkpoints."""
from __future__ import annotations

import math

from composer.core import Callback, State
from composer.loggers import Logger


class NonFiniteLossError(RuntimeError):
    pass


class StopOnNonFiniteLoss(Callback):
    def after_loss(self, state: State, logger: Logger) -> None:
        loss = state.loss["total"] if isinstance(state.loss, dict) else state.loss
        value = float(loss.detach().float().mean())
        if not math.isfinite(value):
            step = int(state.timestamp.batch)
            raise NonFiniteLossError(
                f"loss is {value} at step {step} (batch {step + 1} of the run); stopping before the "
                "optimizer step. The last checkpoint written before this step is kept unchanged."
            )
