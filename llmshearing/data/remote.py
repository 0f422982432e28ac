"""A corpus on remote storage (s3://, gs://, oci://, hf://, azure://, ... -- whatever
mosaicml-streaming downloads -- or another directory), with ``data.path`` as its local cache.

:func:`mirror_corpus` fetches, before training, what has to be local: ``manifest.json``, every
domain's eval split (index and shards; small) and each train split's ``index.json``. Train
shards are fetched on demand, while sampling, by streaming (:func:`train_stream`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence

from streaming import Stream
from streaming.base.storage import CloudDownloader

from llmshearing.data.corpus import (INDEX_NAME, MANIFEST_NAME, CorpusError, check_domains,
                                     domain_split_dir, load_manifest)

DOWNLOAD_TIMEOUT_S = 300.0


def remote_join(remote: str, *parts: str) -> str:
    return "/".join([remote.rstrip("/"), *parts])


def fetch(remote: str, local_root: Path, *parts: str) -> Path:
    """``remote/parts`` into ``local_root/parts`` unless it is already there."""
    target = local_root.joinpath(*parts)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")  # ranks may fetch the same file
    source = remote_join(remote, *parts)
    try:
        CloudDownloader.direct_download(source, str(partial), DOWNLOAD_TIMEOUT_S)
        os.replace(partial, target)
    except Exception as error:  # noqa: BLE001 - every backend raises its own exception types
        partial.unlink(missing_ok=True)
        raise CorpusError(f"cannot fetch {source}: {str(error).splitlines()[0] if str(error) else error!r}") from error
    return target


def mirror_corpus(remote: str, local: str | Path, domains: Optional[Sequence[str]] = None,
                  train_split: str = "train") -> dict:
    """Fetch the manifest, eval splits and train indexes of ``remote`` into ``local``."""
    local = Path(local)
    fetch(remote, local, MANIFEST_NAME)
    manifest = load_manifest(local)
    domains = list(domains or manifest["domains"])
    check_domains(manifest, domains, remote)
    for domain in domains:
        fetch(remote, local, domain, train_split, INDEX_NAME)
        index = fetch(remote, local, domain, "eval", INDEX_NAME)
        for shard in _shards(index):
            fetch(remote, local, domain, "eval", shard["raw_data"]["basename"])
    return manifest


def _shards(index_path: Path) -> list:
    try:
        return json.loads(index_path.read_text(encoding="utf-8"))["shards"]
    except (OSError, ValueError, KeyError) as error:
        raise CorpusError(f"MDS index is not readable: {index_path} ({error})") from error


def train_stream(data_dir: str | Path, domain: str, remote: Optional[str] = None, split: str = "train",
                 **kwargs: Any) -> Stream:
    """The streaming ``Stream`` of a domain's train split (``train`` or ``cpt``): validated local
    shards, or the remote split cached under ``data_dir`` (shards downloaded when first read)."""
    if remote is None:
        return Stream(local=str(domain_split_dir(data_dir, domain, split)), **kwargs)
    return Stream(remote=remote_join(remote, domain, split), local=str(Path(data_dir) / domain / split),
                  **kwargs)
