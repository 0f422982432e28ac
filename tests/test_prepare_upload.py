"""A remote --out: prepared in a staging folder, uploaded through streaming's uploader, manifest last."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streaming.base.storage import upload as streaming_upload

from llmshearing.data.loaders import open_eval_splits
from llmshearing.data.prepare.cli import main
from llmshearing.data.prepare.upload import corpus_files, upload_corpus

DOCUMENT = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. "


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for domain, repeat in (("alpha", 6), ("beta", 9)):
        with (folder / f"{domain}.jsonl").open("w") as handle:
            for index in range(60):
                handle.write(json.dumps({"text": f"{domain} {index}. " + DOCUMENT * repeat}) + "\n")
    return folder


def prepare_args(inputs: Path, out: str, *extra: str) -> list[str]:
    return ["--tokenizer", "smollm2", "--out", out, "--seq-len", "32", "--domain", f"alpha={inputs / 'alpha.jsonl'}",
            "--domain", f"beta={inputs / 'beta.jsonl'}", "--eval-tokens", "256", "--train-tokens", "2k",
            "--workers", "1", "--no-progress", *extra]


class RecordingUploader:
    """Stands in for a bucket: copies into ``bucket`` (streaming's LocalUploader) and records the order."""

    def __init__(self, bucket: Path, fail_on: str | None = None):
        self.bucket, self.fail_on, self.uploaded = bucket, fail_on, []

    def install(self, monkeypatch) -> "RecordingUploader":
        recorder, original_get = self, streaming_upload.CloudUploader.get

        def get(out, keep_local=False, progress_bar=False, retry=2, exist_ok=False):
            if not isinstance(out, tuple):  # the MDS writers' own local folders
                return original_get(out, keep_local, progress_bar, retry, exist_ok)
            local, remote = out
            assert remote.startswith("s3://bucket/")
            uploader = streaming_upload.LocalUploader((local, str(recorder.bucket)), keep_local, progress_bar,
                                                      retry, exist_ok)
            original = uploader.upload_file

            def upload_file(filename):
                if filename == recorder.fail_on:
                    raise ConnectionError("endpoint unreachable\nsecond line")
                recorder.uploaded.append(filename)
                (recorder.bucket / filename).parent.mkdir(parents=True, exist_ok=True)  # a bucket has no folders
                original(filename)

            uploader.upload_file = upload_file
            return uploader

        monkeypatch.setattr(streaming_upload.CloudUploader, "get", staticmethod(get))
        return self


def read_split(corpus: Path, split: str = "eval") -> dict[str, np.ndarray]:
    return {domain: np.stack([dataset[i]["input_ids"].numpy() for i in range(len(dataset))])
            for domain, dataset in open_eval_splits(corpus, ["alpha", "beta"], 32, split=split).items()}


def test_a_remote_out_is_prepared_locally_and_uploaded_manifest_last(inputs, tmp_path, monkeypatch, capsys):
    recorder = RecordingUploader(tmp_path / "bucket").install(monkeypatch)
    staging = tmp_path / "staging"
    assert main(prepare_args(inputs, "s3://bucket/corpus", "--local-dir", str(staging))) == 0
    assert recorder.uploaded[-1] == "manifest.json"
    assert recorder.uploaded == list(corpus_files(staging))
    assert not (recorder.bucket / ".prepare").exists()  # run state stays local
    for split in ("train", "eval"):
        remote, local = read_split(recorder.bucket, split), read_split(staging, split)
        assert all(np.array_equal(remote[domain], local[domain]) for domain in local)


def test_a_failed_upload_is_one_line_and_the_same_command_retries_it(inputs, tmp_path, monkeypatch, capsys):
    staging = tmp_path / "staging"
    RecordingUploader(tmp_path / "bucket", fail_on="beta/eval/index.json").install(monkeypatch)
    assert main(prepare_args(inputs, "s3://bucket/corpus", "--local-dir", str(staging))) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: uploading beta/eval/index.json to s3://bucket/corpus failed: endpoint unreachable;")
    assert f"complete in {staging}" in error and "run the same command again" in error
    assert not (tmp_path / "bucket" / "manifest.json").exists()  # a reader never sees it as complete

    recorder = RecordingUploader(tmp_path / "bucket").install(monkeypatch)
    assert main(prepare_args(inputs, "s3://bucket/corpus", "--local-dir", str(staging))) == 0
    assert "already holds the finished corpus: uploading it" in capsys.readouterr().err
    assert (recorder.bucket / "manifest.json").is_file()


def test_pieces_with_a_remote_out_are_refused_naming_the_merge_upload(inputs, capsys):
    assert main(prepare_args(inputs, "s3://bucket/corpus", "--num-shards", "2", "--shard-index", "0")) == 2
    assert "merge DIR --upload s3://bucket/corpus" in capsys.readouterr().err


def test_upload_to_a_folder_gives_a_corpus_the_loaders_read(inputs, tmp_path, capsys):
    local = tmp_path / "local"
    assert main(prepare_args(inputs, str(local))) == 0
    count = upload_corpus(local, str(tmp_path / "copy"), log=lambda line: None)
    assert count == len(list(corpus_files(local)))
    assert json.loads((tmp_path / "copy" / "manifest.json").read_text()) == json.loads((local / "manifest.json").read_text())
    assert all(np.array_equal(a, b) for a, b in zip(read_split(local).values(), read_split(tmp_path / "copy").values()))
