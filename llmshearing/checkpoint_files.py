"""Checkpoint files on disk: written whole or not at all, checked before anything loads them.

A file is written under a hidden partial name in its final directory, flushed to disk, then
renamed over the final name (``os.replace`` is atomic on POSIX), so a crash or a full disk while
saving never leaves a half-written file under a checkpoint's name. A killed writer can leave its
partial file behind; the name (``.partial-<pid>-<final name>``) keeps it out of every checkpoint
pattern.

``torch.save`` files are zip archives with a CRC per entry; ``torch.load`` checks neither, and
loads a checkpoint with flipped bits without a word. :func:`verify_checkpoint_file` reads the
whole file once and checks every CRC (about 1 s per GB).
"""
from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path
from typing import Callable

from llmshearing.errors import CheckpointError

PARTIAL_PREFIX = ".partial-"
PICKLE_MAGIC = b"\x80"  # torch.save's legacy (non-zip) format starts with a pickle protocol opcode


def partial_path(final: Path) -> Path:
    return final.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-{final.name}")


def is_partial(path: Path) -> bool:
    return path.name.startswith(PARTIAL_PREFIX)


def write_atomically(final, write: Callable[[Path], None]) -> Path:
    """``write(partial)`` then rename it to ``final``; on failure nothing appears at ``final``.

    An ``OSError`` (disk full, quota, permissions) becomes a one-line CheckpointError naming the
    file; whatever was at ``final`` before is untouched either way.
    """
    final = Path(final)
    partial = partial_path(final)
    try:
        write(partial)
        _fsync(partial)
        os.replace(partial, final)
        _fsync_directory(final.parent)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
            raise CheckpointError(f"could not write checkpoint {final}: {reason} "
                                  f"(nothing was written under that name; earlier checkpoints are intact)") from exc
        raise
    return final


def point_link(link, target_name: str) -> None:
    """Make ``link`` a symlink to ``target_name`` (relative), replacing what was there atomically."""
    link = Path(link)
    partial = partial_path(link)
    partial.unlink(missing_ok=True)
    os.symlink(target_name, partial)
    os.replace(partial, link)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as exc:  # some file systems cannot sync a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(handle)


def verify_checkpoint_file(path, check_crc: bool = True) -> Path:
    """Raise CheckpointError naming ``path`` unless it is a complete, uncorrupted checkpoint file
    (``check_crc=False``: only that it exists and is a whole archive, without reading it all)."""
    path = Path(path)
    if not path.exists():
        kind = "dangling link" if path.is_symlink() else "no such file"
        raise CheckpointError(f"checkpoint {path} not found ({kind})")
    if path.is_dir():  # sharded (FSDP) checkpoints: torch.distributed.checkpoint checks its own files
        return path
    try:
        if not zipfile.is_zipfile(path):
            with path.open("rb") as handle:
                if handle.read(1) == PICKLE_MAGIC:
                    return path
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated (not a torch.save archive)")
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip() if check_crc else None
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile raises several types for a damaged archive
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({exc})") from exc
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt (entry {damaged} fails its CRC check)")
    return path
