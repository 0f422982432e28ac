"""A remote ``--out`` (``s3://``, ``gs://``, ``oci://``, ``azure://``, ``hf://`` ...): the corpus is
prepared in a local staging folder and then uploaded with mosaicml-streaming's own uploader
(the one its MDSWriter uses), the manifest last so a reader never sees a half-uploaded corpus
as complete. Only what the corpus references is uploaded (no surplus units, no run state).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator

from llmshearing.convert.messages import first_line
from llmshearing.data.corpus import DOCUMENTS_NAME, INDEX_NAME, MANIFEST_NAME
from llmshearing.data.prepare.unit_writer import read_json
from llmshearing.errors import RunFailedError

DEFAULT_STAGING_ROOT = Path.home() / ".cache" / "llmshearing" / "prepare"


class UploadError(RunFailedError):
    """The corpus is complete locally but could not be uploaded; the same command retries."""


def is_remote(out: str | Path) -> bool:
    return "://" in str(out)


def staging_dir(remote: str, local_dir: str | Path | None) -> Path:
    """Where a remote corpus is prepared: ``--local-dir``, or a cache folder named after the URI."""
    if local_dir is not None:
        return Path(local_dir)
    return DEFAULT_STAGING_ROOT / hashlib.sha256(remote.encode()).hexdigest()[:16]


def corpus_files(local: Path) -> Iterator[str]:
    """The corpus's files, relative to ``local``: shards before their index, the manifest last."""
    manifest = read_json(local / MANIFEST_NAME)
    for domain in manifest["domains"]:
        for split in manifest.get("splits", ["train", "eval"]):
            for shard in read_json(local / domain / split / INDEX_NAME)["shards"]:
                yield f"{domain}/{split}/{shard['raw_data']['basename']}"
            yield f"{domain}/{split}/{INDEX_NAME}"
        if (local / domain / DOCUMENTS_NAME).is_file():
            yield f"{domain}/{DOCUMENTS_NAME}"
    yield MANIFEST_NAME


def upload_corpus(local: Path, remote: str, log: Callable[[str], None], progress: bool = False) -> int:
    """Upload the finished corpus in ``local`` to ``remote``; returns the number of files."""
    from streaming.base.storage.upload import CloudUploader

    files = list(corpus_files(Path(local)))
    try:
        uploader = CloudUploader.get((str(local), remote), keep_local=True, exist_ok=True, progress_bar=False)
    except Exception as error:  # noqa: BLE001 - each provider fails in its own way
        raise UploadError(f"cannot upload to {remote}: {first_line(error)}; the corpus is complete in {local}")
    if progress:
        from tqdm.auto import tqdm
        files_iter = tqdm(files, desc=f"uploading to {remote}", unit=" files")
    else:
        files_iter = files
    for relative in files_iter:
        if not is_remote(remote):  # a folder (e.g. a network mount): streaming's local copy makes no folders
            (Path(remote) / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            uploader.upload_file(relative)
        except Exception as error:  # noqa: BLE001
            raise UploadError(f"uploading {relative} to {remote} failed: {first_line(error)}; the corpus is "
                               f"complete in {local}: run the same command again to retry the upload") from error
    log(f"uploaded {len(files)} files to {remote}")
    return len(files)
