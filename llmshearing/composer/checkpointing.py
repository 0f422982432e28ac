"""Composer's checkpoints, made safe to crash in and checked before a run loads one.

Composer 0.32.1 writes a checkpoint straight to its final name
(``composer.utils.checkpoint._write_checkpoint_file``): a crash or a full disk mid-write leaves a
truncated ``ep0-ba10-rank0.pt`` that a later ``load_path`` (or ``fit_start``'s check for files
"from the future") trips over. :func:`install_atomic_checkpoint_writes` routes that one function
through :func:`llmshearing.checkpoint_files.write_atomically`; the ``latest`` link is only moved
after the write returns, so it always points at a whole file.

:func:`check_checkpoint_to_load` runs before the Trainer is built: the file that ``autoresume`` or
``load_path`` will load must be whole (one-line CheckpointError naming it otherwise); with
``autoresume``, partial files of killed saves are removed, and a ``latest`` link lost in the instant
between Composer removing and re-creating it is re-pointed at the newest checkpoint instead of
silently starting the run over.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from composer.utils import checkpoint as composer_checkpoint
from composer.utils import dist
from composer.utils.file_helpers import format_name_with_dist, parse_uri

from llmshearing.checkpoint_files import (PARTIAL_PREFIX, is_partial, point_link, verify_checkpoint_file,
                                          write_atomically)
from llmshearing.config.schema import TrainConfig

log = logging.getLogger(__name__)

LATEST_RANK0 = "latest-rank0.pt"  # Composer's default save_latest_filename, as rank 0 names it
CHECKPOINT_BATCH = re.compile(r"-ba(\d+)-rank0\.pt$")


def install_atomic_checkpoint_writes() -> None:
    """Make every monolithic checkpoint Composer writes appear whole or not at all (idempotent)."""
    write = composer_checkpoint._write_checkpoint_file
    if getattr(write, "atomic", False):
        return

    def write_checkpoint_file(state_dict, filename: str) -> None:
        # the partial name keeps the final suffix, which tells Composer whether to compress
        write_atomically(filename, lambda partial: write(state_dict, str(partial)))

    write_checkpoint_file.atomic = True
    composer_checkpoint._write_checkpoint_file = write_checkpoint_file


def check_checkpoint_to_load(cfg: TrainConfig) -> Optional[Path]:
    """The local checkpoint file the run will load, verified; None when it starts fresh or remotely."""
    if dist.get_global_rank() != 0:
        return None
    if cfg.autoresume and cfg.save_folder and _is_local(cfg.save_folder):
        folder = Path(format_name_with_dist(cfg.save_folder, cfg.run_name))
        latest = folder / LATEST_RANK0
        remove_partial_files(folder)
        if not latest.exists():
            _repoint_latest(folder, latest)
        if latest.exists():
            return verify_checkpoint_file(latest.resolve(), cfg.verify_checkpoint)
    if cfg.load_path and _is_local(cfg.load_path):
        return verify_checkpoint_file(cfg.load_path, cfg.verify_checkpoint)
    return None


def _is_local(path: str) -> bool:
    return parse_uri(path)[0] == ""


def _repoint_latest(folder: Path, latest: Path) -> None:
    newest = newest_checkpoint(folder)
    if newest is None:
        return
    log.warning("%s is missing; resuming from the newest checkpoint %s", latest, newest.name)
    point_link(latest, newest.name)


def remove_partial_files(folder: Path) -> None:
    """Partial files of saves that were killed (a checkpoint's size each); none is being written
    now, as this run's rank 0 is the only writer of its checkpoints and has not started."""
    for partial in folder.glob(f"{PARTIAL_PREFIX}*"):
        log.warning("removing %s, left by a save that did not finish", partial)
        partial.unlink(missing_ok=True)


def newest_checkpoint(folder: Path) -> Optional[Path]:
    """The rank-0 checkpoint file of the highest batch in ``folder`` (partial files ignored)."""
    found = []
    for path in folder.glob("*-ba*-rank0.pt"):
        match = CHECKPOINT_BATCH.search(path.name)
        if match and path.is_file() and not path.is_symlink() and not is_partial(path):
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None
