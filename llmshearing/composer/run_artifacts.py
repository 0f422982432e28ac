"""A run's own files in its ``save_folder``, local or remote: the pruning plan, the tokenizer, the plots.

A local ``save_folder`` gets each file in place, at ``<save_folder>/<name>`` (``{run_name}`` and the
other placeholders formatted as Composer formats them for checkpoints).

A remote one (``s3://bucket/runs/{run_name}``, ``gs://``, ``oci://``, ``libcloud://``, ...) is what
Composer 0.32.1 uploads checkpoints to: its CheckpointSaver saves each checkpoint in a local
temporary folder and hands it to its own :class:`composer.utils.RemoteUploader` as
``<path part of save_folder>/<file name>``. :class:`RunArtifacts` writes our files into a local
staging folder and gives them to that same uploader under the same prefix, so they land next to
the checkpoints (``overwrite=True``; upload errors surface where the checkpoints' do). No local
folder named after the URI (``s3:/bucket/...``) is ever created.

As Composer does for checkpoints of a local save_folder, every file written is also offered to the
loggers that upload files (``Logger.upload_file``: a RemoteUploaderDownloader, WandB artifacts);
without such a logger that is a no-op. Only global rank 0 writes.

One :class:`RunArtifacts` per run (:meth:`RunArtifacts.for_config`, made by ``build_trainer``) is
shared by every site that writes a file and is itself a Composer callback: at INIT it learns the run name and the uploader
and performs the writes asked for before the Trainer existed (the tokenizer); at FIT_END it
uploads the files that code outside this module wrote itself at the :meth:`RunArtifacts.path` it
was given (the domain-weights plot), so it must come after that code's callback.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

from composer.callbacks import CheckpointSaver
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist
from composer.utils.file_helpers import format_name_with_dist, parse_uri

log = logging.getLogger(__name__)

Writer = Callable[[Path], Any]


def is_remote(folder: Optional[Union[str, Path]]) -> bool:
    """Whether ``folder`` is an object-store URI (``s3://...``) rather than a local path."""
    return bool(folder) and parse_uri(str(folder))[0] != ""


def local_run_folder(save_folder: str, run_name: Optional[str]) -> Optional[Path]:
    """The local folder ``save_folder`` names for ``run_name`` (formatted like Composer's
    checkpoint folder); None for a remote one."""
    if is_remote(save_folder):
        return None
    if run_name is None and "{run_name}" in save_folder:
        raise RuntimeError(f"save_folder {save_folder} names the run, whose name is not known before the "
                           "Trainer's INIT")
    return Path(format_name_with_dist(save_folder, run_name))


class RunPath(os.PathLike):
    """The local path of one file of the run folder, resolved when it is used (the run name is
    only known from the Trainer's INIT on)."""

    def __init__(self, artifacts: "RunArtifacts", name: str):
        self.artifacts = artifacts
        self.name = name

    def __fspath__(self) -> str:
        return str(self.artifacts.folder() / self.name)

    def __repr__(self) -> str:
        return f"RunPath({self.artifacts.save_folder!r}, {self.name!r})"


class RunArtifacts(Callback):
    """Write files of the run into ``save_folder``, local or remote (see the module docstring).

    ``backend_kwargs`` (the yaml's ``save_backend_kwargs``) complete the object store Composer
    builds from a remote save_folder's URI alone, for checkpoints and these files alike (e.g. a
    ``libcloud://`` provider, an S3 ``endpoint_url``); they are handed to the CheckpointSaver's
    uploader at INIT, before it first reaches the store.
    """

    def __init__(self, save_folder: str, run_name: Optional[str] = None,
                 backend_kwargs: Optional[Mapping[str, Any]] = None):
        self.save_folder = str(save_folder)
        self.remote = is_remote(self.save_folder)
        self.run_name = run_name
        self.backend_kwargs = dict(backend_kwargs or {})
        self._bound = False
        self._logger: Optional[Logger] = None
        self._uploader = None  # the CheckpointSaver's RemoteUploader of a remote save_folder
        self._staging: Optional[tempfile.TemporaryDirectory] = None
        self._deferred: List[Tuple[str, Writer]] = []
        self._watched: List[str] = []

    @classmethod
    def for_config(cls, cfg) -> Optional["RunArtifacts"]:
        """The run folder ``cfg`` (a TrainConfig) names; None without a save_folder."""
        if not cfg.save_folder:
            return None
        return cls(cfg.save_folder, cfg.run_name, cfg.save_backend_kwargs)

    # --- the one job -----------------------------------------------------------------------------
    def write(self, name: str, writer: Writer, state: Optional[State] = None,
              logger: Optional[Logger] = None) -> Optional[Path]:
        """Have ``writer(path)`` write ``name`` (a file, or a folder of files) of the run folder, and
        upload it when the folder is remote. Global rank 0 only; other ranks get None. Before the
        Trainer's INIT (no ``state`` given and none seen yet) the write waits for INIT."""
        if dist.get_global_rank() != 0:
            return None
        if state is not None:
            self._bind(state, logger)
        if not self._bound:
            self._deferred.append((name, writer))
            return None
        path = self.folder() / name
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        self._publish(name, path)
        return path

    def path(self, name: str) -> RunPath:
        """The path for code that writes ``name`` itself (given it before the run name is known);
        FIT_END uploads the file if it is there."""
        if name not in self._watched:
            self._watched.append(name)
        return RunPath(self, name)

    def folder(self) -> Path:
        """Where the run's files are written on this machine: the save_folder itself, or the
        staging folder of a remote one."""
        if not self.remote:
            return local_run_folder(self.save_folder, self.run_name)
        if self._staging is None:
            self._staging = tempfile.TemporaryDirectory(prefix="llmshearing-run-")
        return Path(self._staging.name)

    def remote_name(self, name: str) -> str:
        """The object name of ``name``: the path part of save_folder / ``name``, formatted, as
        Composer names checkpoints."""
        prefix = parse_uri(self.save_folder)[2]
        joined = str(Path(prefix) / name) if prefix else name
        return format_name_with_dist(joined, self.run_name).lstrip("/")

    def location(self, name: str) -> str:
        """Where ``name`` ends up, for messages: a local path or the object's URI."""
        if not self.remote:
            return str(self.folder() / name)
        backend, bucket, _ = parse_uri(self.save_folder)
        return f"{backend}://{bucket}/{self.remote_name(name)}"

    # --- Composer events -------------------------------------------------------------------------
    def init(self, state: State, logger: Logger) -> None:
        self._bind(state, logger)
        if self._uploader is not None:  # every rank's: each rank's saver may upload
            self._uploader.backend_kwargs.update(self.backend_kwargs)
        deferred, self._deferred = self._deferred, []
        for name, writer in deferred:
            self.write(name, writer)

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() != 0:
            return
        self._bind(state, logger)
        for name in self._watched:
            path = self.folder() / name
            if path.exists():
                self._publish(name, path)

    # ---------------------------------------------------------------------------------------------
    def _saver_uploader(self, state: State):
        for callback in state.callbacks:
            uploader = getattr(callback, "remote_uploader", None)
            if isinstance(callback, CheckpointSaver) and uploader is not None \
                    and uploader.remote_folder == self.save_folder:
                return uploader
        return None

    def _bind(self, state: State, logger: Optional[Logger]) -> None:
        if logger is not None:
            self._logger = logger
        if self._bound:
            return
        self.run_name = state.run_name
        self._uploader = self._saver_uploader(state) if self.remote else None
        self._bound = True

    def _publish(self, name: str, path: Path) -> None:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            self._upload(name if file == path else f"{name}/{file.relative_to(path).as_posix()}", file)
        if self.remote:
            log.info("uploading %s to %s", name, self.location(name))

    def _upload(self, name: str, file: Path) -> None:
        remote_name = self.remote_name(name)
        if self._uploader is not None:
            self._uploader.upload_file_async(remote_file_name=remote_name, file_path=file, overwrite=True)
        elif self._logger is not None:
            self._logger.upload_file(remote_file_name=remote_name, file_path=file, overwrite=True)
            if self.remote and not any(d.can_upload_files() for d in self._logger.destinations):
                log.warning("%s is not uploaded to %s: no uploader for the save_folder was found; it stays at %s",
                            name, self.location(name), file)
        elif self.remote:
            log.warning("%s is not uploaded to %s (no Trainer to upload with); it stays at %s",
                        name, self.location(name), file)


def as_run_artifacts(folder: Union[str, Path, RunArtifacts, None]) -> Optional[RunArtifacts]:
    """A RunArtifacts for ``folder`` (a save_folder string, or one already made); None for None."""
    if folder is None or isinstance(folder, RunArtifacts):
        return folder
    return RunArtifacts(str(folder))
