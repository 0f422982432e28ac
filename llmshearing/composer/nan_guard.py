"""Stop a run at the first non-finite loss, before the bad step can touch weights or checkpoints.

The checkpoint holding the weights that produced the bad loss (saved right before this step) is
renamed to ``*.nonfinite`` (kept for inspection, never resumed from by accident) and the
``latest-rank*.pt`` link is pointed back at the last good checkpoint. That is done in a local
save_folder only: the checkpoints of a remote one are already uploaded, and renaming Composer's
local staging copies would set nothing aside, so they are left as they are (said in the error).
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Optional

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmshearing.checkpoint_files import is_partial, point_link
from llmshearing.composer.run_artifacts import local_run_folder
from llmshearing.errors import RunFailedError

log = logging.getLogger(__name__)
CHECKPOINT_BATCH = re.compile(r"-ba(\d+)-rank(\d+)\.pt$")


class NonFiniteLossError(RunFailedError):
    """The loss became NaN/inf: the run stopped before the optimizer step (exit code 3)."""

    exit_code = 3


class StopOnNonFiniteLoss(Callback):
    def __init__(self, save_folder: Optional[str] = None):
        self.save_folder = save_folder

    def after_loss(self, state: State, logger: Logger) -> None:
        loss = state.loss["total"] if isinstance(state.loss, dict) else state.loss
        value = float(loss.detach().float().mean())
        if math.isfinite(value):
            return
        completed = int(state.timestamp.batch)
        note = "no checkpoint was written before it"
        if self.save_folder and dist.get_local_rank() == 0:
            folder = local_run_folder(self.save_folder, state.run_name)
            if folder is None:
                note = (f"the checkpoints in the remote save_folder {self.save_folder} were not set aside, as only "
                        f"a local folder's can be: ep*-ba{completed}-rank*.pt, if saved, holds the weights that gave "
                        "this loss")
                log.warning("not quarantining checkpoints: %s", note)
            else:
                note = quarantine_checkpoints(folder, completed)
        raise NonFiniteLossError(
            f"loss is {value} at step {completed + 1}; stopped before the optimizer step ({note})"
        )


def quarantine_checkpoints(folder: Path, bad_batch: int) -> str:
    """Rename checkpoints of ``bad_batch`` aside and re-point ``latest`` links; describe the result."""
    good = {}
    for path in sorted(folder.glob("*-ba*-rank*.pt")):
        match = CHECKPOINT_BATCH.search(path.name)
        if not match or path.is_symlink() or is_partial(path):
            continue
        batch, rank = int(match.group(1)), match.group(2)
        if batch >= bad_batch:
            path.rename(path.with_name(path.name + ".nonfinite"))
        elif batch > good.get(rank, (-1, None))[0]:
            good[rank] = (batch, path)
    for rank, (_, path) in good.items():
        point_link(folder / f"latest-rank{rank}.pt", path.name)
    for link in folder.glob("latest-rank*.pt"):
        if link.is_symlink() and not link.exists():
            link.unlink()
    if not good:
        return "no good checkpoint had been written yet"
    return f"last good checkpoint: {good[min(good)][1]}"
