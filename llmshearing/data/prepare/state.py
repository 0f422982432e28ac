"""Where a preparation keeps its state, and whether an output folder may be (re)used.

    <out>/.prepare/options.json             what every piece prepares: the same for all of them
    <out>/.prepare/units/<domain>/<id>.json  one record per prepared unit (written after its shards)
    <out>/.prepare/pieces/<i>-of-<n>.json    a piece that finished
    <out>/manifest.json                      written last, by the merge: the corpus is complete
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from llmshearing.data.corpus import MANIFEST_NAME
from llmshearing.data.prepare.unit_writer import read_json, write_json_atomically
from llmshearing.errors import LLMShearingError

STATE_DIR = ".prepare"


class PrepareError(LLMShearingError):
    """The corpus cannot be prepared as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class PreparePaths:
    out_dir: Path

    @property
    def state_dir(self) -> Path:
        return self.out_dir / STATE_DIR

    @property
    def options(self) -> Path:
        return self.state_dir / "options.json"

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST_NAME

    def unit_record(self, domain: str, unit_id: str) -> Path:
        return self.state_dir / "units" / domain / f"{unit_id}.json"

    def piece_marker(self, index: int, count: int) -> Path:
        return self.state_dir / "pieces" / f"{index}-of-{count}.json"


def refuse_unusable_output(paths: PreparePaths, overwrite: bool) -> None:
    """Refuse, in one line, an ``out_dir`` no run may use whatever its options: a file, a finished
    corpus without ``overwrite``, a folder of files this command did not write (checked before the
    inputs are read, and again by ``claim_output``)."""
    out = paths.out_dir
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} is a file; give a folder")
    if paths.manifest.is_file() and not overwrite:
        raise PrepareError(f"{out} already holds a prepared corpus (manifest.json); pass --overwrite to "
                           "replace it, or choose another --out")
    if not (paths.manifest.is_file() or paths.options.is_file()) and out.is_dir() and any(out.iterdir()):
        raise PrepareError(f"--out {out} is not empty and holds no corpus prepared by this command; "
                           "choose a new or empty folder (nothing was changed)")


def claim_output(paths: PreparePaths, options: dict, overwrite: bool, log) -> None:
    """Make ``out_dir`` ready for a run with ``options``: new, resumed, or (``overwrite``) cleared.

    Refuses, in one line, what ``refuse_unusable_output`` refuses and a run begun with other
    options without ``overwrite``.
    """
    refuse_unusable_output(paths, overwrite)
    if paths.manifest.is_file() or paths.options.is_file():
        if overwrite:
            _clear(paths)
            log(f"--overwrite: removed the corpus in {paths.out_dir}")
        else:
            _check_same_options(paths, options, log)
    if paths.options.is_file():
        return
    write_json_atomically(paths.options, options)


def _keeps_prepared_units(key: str, earlier, now) -> bool:
    """A setting a re-run may change and keep the prepared units: --short-domains is applied by the
    merge only, and --skip-bad-records may be turned on (the units prepared without it had none)."""
    return key == "short_domains" or (key == "skip_bad_records" and earlier is False and now is True)


def _check_same_options(paths: PreparePaths, options: dict, log) -> None:
    earlier = read_json(paths.options)
    if earlier == options:
        return
    differing = sorted(key for key in set(earlier) | set(options) if earlier.get(key) != options.get(key))
    if all(_keeps_prepared_units(key, earlier.get(key), options.get(key)) for key in differing):
        # what the failed run's error told the user to pass: its prepared units stay
        write_json_atomically(paths.options, options)
        log(f"{paths.out_dir}: resuming with {', '.join(f'{key}={options[key]}' for key in differing)}")
        return
    raise PrepareError(f"{paths.out_dir} holds an unfinished preparation with other settings "
                       f"(differing: {', '.join(differing)}); re-run it with the same command to resume, "
                       "or pass --overwrite to start over")


def _clear(paths: PreparePaths) -> None:
    """Remove what this command wrote (the manifest first: the corpus is incomplete from then on)."""
    domains: set[str] = set()
    for source in (paths.manifest, paths.options):
        if source.is_file():
            payload = read_json(source)
            listed = payload.get("domains", [])
            domains.update(listed if isinstance(listed, list) else list(listed))
    paths.manifest.unlink(missing_ok=True)
    for domain in domains:
        shutil.rmtree(paths.out_dir / domain, ignore_errors=True)
    shutil.rmtree(paths.state_dir, ignore_errors=True)


def load_options(paths: PreparePaths) -> dict:
    if not paths.options.is_file():
        raise PrepareError(f"{paths.out_dir} holds no preparation to merge ({paths.options} is missing); "
                           "run the pieces first")
    return read_json(paths.options)
