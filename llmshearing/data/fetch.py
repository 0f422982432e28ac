"""Fetch pinned packages from PyPI, Debian or npm with their own clients, and unpack them.

Each package is downloaded once into ``<cache_dir>/<registry>/<name>-<version>/``: the raw
download (wheel, .deb or .tgz) plus its unpacked tree under ``tree/``. A ``.complete`` marker is
written last, so an interrupted fetch is redone instead of being trusted.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llmshearing.errors import RunFailedError

DEFAULT_CACHE_DIR = Path("~/.cache/llmshearing/corpus_sources").expanduser()
_COMPLETE_MARKER = ".complete"
_TREE_DIR = "tree"


class FetchError(RunFailedError):
    """A package could not be downloaded or unpacked."""


@dataclass(frozen=True)
class PackageRef:
    """One pinned package in one registry ("pypi", "debian" or "npm")."""

    registry: str
    name: str
    version: str
    license: str

    @property
    def label(self) -> str:
        return f"{self.registry} package {self.name}=={self.version}"

    def as_manifest_entry(self) -> dict:
        return {"registry": self.registry, "name": self.name, "version": self.version,
                "license": self.license}


def fetch_package_tree(package: PackageRef, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Return the unpacked file tree of ``package``, downloading it on first use."""
    package_dir = (Path(cache_dir) / package.registry
                   / f"{_safe_name(package.name)}-{package.version}")
    if (package_dir / _COMPLETE_MARKER).exists():
        return package_dir / _TREE_DIR
    if package.registry not in _DOWNLOADERS:
        raise FetchError(f"{package.label}: unknown registry '{package.registry}'")
    shutil.rmtree(package_dir, ignore_errors=True)
    download_dir = package_dir / "download"
    download_dir.mkdir(parents=True)
    archive = _DOWNLOADERS[package.registry](package, download_dir)
    _unpack(archive, package_dir / _TREE_DIR, package)
    (package_dir / _COMPLETE_MARKER).write_text(archive.name + "\n")
    return package_dir / _TREE_DIR


def _safe_name(name: str) -> str:
    return name.replace("@", "").replace("/", "__")


def _run_client(command: list[str], package: PackageRef, cwd: Path) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError as error:
        raise FetchError(f"{package.label}: client '{command[0]}' is not installed") from error
    except subprocess.TimeoutExpired as error:
        raise FetchError(f"{package.label}: download timed out ({' '.join(command)})") from error
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise FetchError(f"{package.label}: download failed ({' '.join(command)}): "
                         + " | ".join(detail))


def _single_download(download_dir: Path, pattern: str, package: PackageRef) -> Path:
    found = sorted(download_dir.glob(pattern))
    if len(found) != 1:
        raise FetchError(f"{package.label}: expected one {pattern} file after download, "
                         f"found {[path.name for path in found]}")
    return found[0]


def _download_pypi(package: PackageRef, download_dir: Path) -> Path:
    _run_client([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", "-q", "-d", str(download_dir),
                 f"{package.name}=={package.version}"], package, download_dir)
    return _single_download(download_dir, "*.whl", package)


def _download_debian(package: PackageRef, download_dir: Path) -> Path:
    command = ["apt-get", "download", f"{package.name}={package.version}"]
    try:
        _run_client(command, package, download_dir)
    except FetchError:
        # The package lists may be missing or stale: refresh them once and retry.
        _run_client(["apt-get", "update", "-q"], package, download_dir)
        _run_client(command, package, download_dir)
    return _single_download(download_dir, "*.deb", package)


def _download_npm(package: PackageRef, download_dir: Path) -> Path:
    _run_client(["npm", "pack", "--silent", f"{package.name}@{package.version}"], package,
                download_dir)
    return _single_download(download_dir, "*.tgz", package)


_DOWNLOADERS = {"pypi": _download_pypi, "debian": _download_debian, "npm": _download_npm}


def _unpack(archive: Path, tree: Path, package: PackageRef) -> None:
    tree.mkdir(parents=True)
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as wheel:
                wheel.extractall(tree)
        elif archive.suffix == ".tgz":
            with tarfile.open(archive) as tarball:
                tarball.extractall(tree, filter="data")
        elif archive.suffix == ".deb":
            _run_client(["dpkg-deb", "-x", str(archive), str(tree)], package, tree)
        else:
            raise FetchError(f"{package.label}: don't know how to unpack {archive.name}")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise FetchError(f"{package.label}: could not unpack {archive.name}: {error}") from error
