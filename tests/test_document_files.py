"""llmshearing.data.document_files: user text files -> (document_id, text) streams."""
from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import pytest

from llmshearing.data.document_files import (SUPPORTED_SUFFIXES, BadRecords, InputError,
                                             InputFile, read_documents, resolve_domain_inputs,
                                             root_domain_specs)
from llmshearing.errors import LLMShearingError

GOOD_LINES = [b'{"text": "alpha", "id": 1}', b"", b'{"text": "   "}', b'{"text": "beta\\ngamma"}']
GOOD_DOCUMENTS = [(1, "alpha"), (4, "beta\ngamma")]  # line numbers: blank and whitespace skipped


def _compress(data: bytes, suffix: str) -> bytes:
    if suffix.endswith(".gz"):
        return gzip.compress(data)
    if suffix.endswith(".zst"):
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    return data


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_compress(data, path.name))
    return path


def _lines(*lines: bytes) -> bytes:
    return b"\n".join(lines) + b"\n"


def _only_input(path: Path) -> InputFile:
    (source,) = resolve_domain_inputs(str(path))
    return source


def _documents(path: Path, **kwargs) -> list[tuple[str, str]]:
    return list(read_documents(_only_input(path), **kwargs))


def _strict_error(path: Path, **kwargs) -> str:
    with pytest.raises(InputError) as caught:
        _documents(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst",
                                    ".json.zst"])
def test_json_lines_formats_yield_line_numbered_documents(tmp_path, suffix):
    path = _write(tmp_path / f"part{suffix}", _lines(*GOOD_LINES))
    source = _only_input(path)
    assert source.format == suffix[1:]
    assert source.key == f"part{suffix}"
    assert source.size == path.stat().st_size
    assert source.path == path
    assert list(read_documents(source)) == [(f"part{suffix}:{n}", text)
                                            for n, text in GOOD_DOCUMENTS]


@pytest.mark.parametrize("suffix", [".json", ".json.gz", ".json.zst"])
def test_json_array_file_yields_documents_by_index(tmp_path, suffix):
    records = [{"text": "first"}, {"text": ""}, {"content": "x", "text": "third"}]
    path = _write(tmp_path / f"a{suffix}", b"\n  " + json.dumps(records, indent=1).encode())
    assert _documents(path) == [(f"a{suffix}:0", "first"), (f"a{suffix}:2", "third")]


def test_byte_order_mark_and_custom_text_field(tmp_path):
    lines = _lines(b'{"body": "x"}', b'{"body": "y"}')
    path = _write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + lines)
    assert _documents(path, text_field="body") == [("bom.jsonl:1", "x"), ("bom.jsonl:2", "y")]


def test_zstd_file_of_several_frames_is_read_to_the_end(tmp_path):
    import zstandard

    frames = [zstandard.ZstdCompressor().compress(_lines(b'{"text": "frame %d"}' % i))
              for i in range(3)]
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(frames))
    assert _documents(path) == [(f"frames.jsonl.zst:{n}", f"frame {n - 1}") for n in (1, 2, 3)]


def test_txt_file_is_one_document(tmp_path):
    _write(tmp_path / "book.txt", "Chapter 1\n\nIt was a dark night. é\n".encode())
    _write(tmp_path / "blank.txt", b" \n\n")
    assert _documents(tmp_path / "book.txt") == [
        ("book.txt", "Chapter 1\n\nIt was a dark night. é\n")]
    assert _documents(tmp_path / "blank.txt") == []


def _write_parquet(path: Path, columns: dict) -> Path:
    import pyarrow
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.table(columns), path, row_group_size=2)
    return path


def test_parquet_yields_rows_by_index(tmp_path):
    path = _write_parquet(tmp_path / "books.parquet",
                          {"text": ["a", "", "c", "d", " ", "f"], "id": [1, 2, 3, 4, 5, 6]})
    assert _documents(path) == [("books.parquet:0", "a"), ("books.parquet:2", "c"),
                                ("books.parquet:3", "d"), ("books.parquet:5", "f")]


def test_parquet_missing_or_non_text_column_is_an_error_naming_the_columns(tmp_path):
    path = _write_parquet(tmp_path / "books.parquet", {"content": ["a"], "id": [1]})
    message = _strict_error(path)
    assert str(path) in message and "content, id" in message and "--text-field" in message
    with pytest.raises(InputError, match="--text-field"):
        _documents(path, text_field="id")
    # not skippable: the whole file lacks the column
    with pytest.raises(InputError, match="content, id"):
        _documents(path, bad_records=BadRecords())
    assert _documents(path, text_field="content") == [("books.parquet:0", "a")]


def test_parquet_null_text_is_a_bad_record(tmp_path):
    path = _write_parquet(tmp_path / "n.parquet", {"text": ["a", None, "c"]})
    message = _strict_error(path)
    assert f"{path}: row 1" in message and "--skip-bad-records" in message
    bad = BadRecords()
    assert _documents(path, bad_records=bad) == [("n.parquet:0", "a"), ("n.parquet:2", "c")]
    assert (bad.count, bad.by_reason) == (1, {"'text' is not a string": 1})


def _write_saved_dataset_by_hand(directory: Path, shards: list[list[str]], stream: bool = True
                                 ) -> Path:
    """What datasets.Dataset.save_to_disk writes: Arrow IPC files listed in state.json."""
    import pyarrow
    import pyarrow.ipc

    directory.mkdir(parents=True)
    names = [f"data-{index:05d}-of-{len(shards):05d}.arrow" for index in range(len(shards))]
    for name, texts in zip(names, shards):
        table = pyarrow.table({"text": texts, "n": list(range(len(texts)))})
        open_writer = pyarrow.ipc.new_stream if stream else pyarrow.ipc.new_file
        with open_writer(str(directory / name), table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    (directory / "state.json").write_text(json.dumps(
        {"_data_files": [{"filename": name} for name in names], "_split": None}))
    (directory / "dataset_info.json").write_text(json.dumps({"features": {}}))
    return directory


@pytest.mark.parametrize("stream", [True, False], ids=["ipc_stream", "ipc_file"])
def test_saved_dataset_directory_is_one_input_numbered_across_its_arrow_files(tmp_path, stream):
    directory = _write_saved_dataset_by_hand(tmp_path / "wiki", [["a", "b", ""], ["d", "e"]],
                                             stream=stream)
    source = _only_input(directory)
    arrow_bytes = sum(path.stat().st_size for path in directory.glob("*.arrow"))
    assert (source.format, source.key, source.size, source.path) == (
        "arrow_dataset", "wiki", arrow_bytes, directory)
    assert list(read_documents(source)) == [("wiki:0", "a"), ("wiki:1", "b"), ("wiki:3", "d"),
                                            ("wiki:4", "e")]
    with pytest.raises(InputError, match=r"no column 'body' \(it has: text, n\).*--text-field"):
        list(read_documents(source, text_field="body"))


def test_saved_dataset_written_by_the_datasets_library(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [f"document {index}" for index in range(7)]
    datasets.Dataset.from_dict({"text": texts, "id": list(range(7))}).save_to_disk(
        str(tmp_path / "wiki"), num_shards=2)
    assert _documents(tmp_path / "wiki") == [(f"wiki:{index}", text)
                                             for index, text in enumerate(texts)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a"]}),
                          "test": datasets.Dataset.from_dict({"text": ["b"]})}).save_to_disk(
        str(tmp_path / "splits"))
    with pytest.raises(InputError, match=r"splits train, test.*splits/train"):
        resolve_domain_inputs(str(tmp_path / "splits"))


# --- resolving domain specs ----------------------------------------------------------------------


def test_directory_is_searched_recursively_skipping_hidden_and_unsupported(tmp_path):
    domain = tmp_path / "github"
    for name in ["b.jsonl", "a/z.parquet.txt", "a/y.jsonl.gz", "c/d/e.json.zst", "notes.md",
                 ".hidden.jsonl", ".cache/x.jsonl", "a/.git/obj.txt"]:
        _write(domain / name, b'{"text": "t"}\n')
    _write_saved_dataset_by_hand(domain / "c" / "saved", [["x"]])
    inputs = resolve_domain_inputs(str(domain))
    assert [(item.key, item.format) for item in inputs] == [
        ("a/y.jsonl.gz", "jsonl.gz"), ("a/z.parquet.txt", "txt"), ("b.jsonl", "jsonl"),
        ("c/d/e.json.zst", "json.zst"), ("c/saved", "arrow_dataset")]
    assert all(item.path.is_absolute() and item.size > 0 for item in inputs)


def test_glob_keys_are_relative_to_the_fixed_prefix_and_sorted(tmp_path):
    for name in ["cc/2023/p2.jsonl.zst", "cc/2023/p1.jsonl.zst", "cc/2019/p9.jsonl.zst",
                 "cc/2019/readme.md", "cc/top.jsonl.zst"]:
        _write(tmp_path / name, b'{"text": "t"}\n')
    recursive = resolve_domain_inputs(str(tmp_path / "cc" / "**" / "*.jsonl.zst"))
    assert [item.key for item in recursive] == ["2019/p9.jsonl.zst", "2023/p1.jsonl.zst",
                                                "2023/p2.jsonl.zst", "top.jsonl.zst"]
    one_level = resolve_domain_inputs(str(tmp_path / "cc" / "2023" / "p[12].jsonl.zst"))
    assert [item.key for item in one_level] == ["p1.jsonl.zst", "p2.jsonl.zst"]
    folders = resolve_domain_inputs(str(tmp_path / "cc" / "20?9"))
    assert [item.key for item in folders] == ["2019/p9.jsonl.zst"]


def test_relative_spec_gives_absolute_paths(tmp_path, monkeypatch):
    _write(tmp_path / "d" / "x.jsonl", b'{"text": "t"}\n')
    monkeypatch.chdir(tmp_path)
    assert [(item.path, item.key) for item in resolve_domain_inputs("d/*.jsonl")] == [
        (tmp_path / "d" / "x.jsonl", "x.jsonl")]
    assert [(item.path, item.key) for item in resolve_domain_inputs("d")] == [
        (tmp_path / "d" / "x.jsonl", "x.jsonl")]


def test_unresolvable_specs_are_one_line_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "only" / "readme.md", b"# x")
    _write(tmp_path / "data.csv", b"text\nx\n")
    splits = tmp_path / "splits"
    for split in ["train", "validation"]:
        _write_saved_dataset_by_hand(splits / split, [["x"]])
    (splits / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    expectations = {
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "missing" / "*.jsonl"): "matches nothing",
        str(tmp_path / "only" / "*"): "no supported input file",
        str(tmp_path / "empty"): "holds no supported input file",
        str(tmp_path / "data.csv"): "must end in one of .jsonl.gz, .json.gz",
        str(splits): f"splits train, validation; pass one split's folder, e.g. {splits / 'train'}",
    }
    for spec, expected in expectations.items():
        with pytest.raises(InputError) as caught:
            resolve_domain_inputs(spec)
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, LLMShearingError)
    with pytest.raises(InputError) as caught:
        resolve_domain_inputs(str(tmp_path / "data.csv"))
    assert len(SUPPORTED_SUFFIXES) == 8
    assert all(suffix in str(caught.value) for suffix in SUPPORTED_SUFFIXES)


def test_root_layout_gives_one_domain_per_sub_folder(tmp_path):
    for name in ["wikipedia/a.jsonl", "arxiv/b.jsonl", ".trash/c.jsonl"]:
        _write(tmp_path / name, b'{"text": "t"}\n')
    assert root_domain_specs(tmp_path) == {"arxiv": str(tmp_path / "arxiv"),
                                           "wikipedia": str(tmp_path / "wikipedia")}
    _write(tmp_path / "stray.jsonl", b"")
    with pytest.raises(InputError, match="belong to no domain: stray.jsonl"):
        root_domain_specs(tmp_path)
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(InputError, match="has no sub-folder"):
        root_domain_specs(tmp_path / "empty_root")
    with pytest.raises(InputError, match="does not exist"):
        root_domain_specs(tmp_path / "nowhere")


# --- bad records ---------------------------------------------------------------------------------

BAD_LINES = {
    "not valid JSON": (b'{"text": "a" "b"}', "not valid JSON (Expecting ',' delimiter: column 14)",
                       "fix the line or pass --skip-bad-records"),
    "not a JSON object": (b'["text"]', "record is not a JSON object (it is an array)",
                          "--skip-bad-records"),
    "no 'text' field": (b'{"id": 3, "content": "x"}',
                        "record has no 'text' field (it has: id, content)",
                        "choose the field with --text-field or pass --skip-bad-records"),
    "'text' is not a string": (b'{"text": null}', "'text' is null, not a string",
                               "--skip-bad-records"),
    "not UTF-8": (b'{"text": "caf\xe9"}', "not UTF-8 (byte offset 13 in the line)",
                  "--skip-bad-records"),
}


@pytest.mark.parametrize("reason", list(BAD_LINES))
def test_bad_record_raises_naming_file_line_and_way_out(tmp_path, reason):
    bad_line, detail, way_out = BAD_LINES[reason]
    path = _write(tmp_path / "part1.jsonl.gz", _lines(b'{"text": "ok"}', b"", bad_line))
    message = _strict_error(path)
    assert message.startswith(f"{path}:3: {detail}; ")
    assert way_out in message


def test_bad_records_are_counted_by_reason_and_good_ones_still_come_out(tmp_path):
    lines = [b'{"text": "first"}']
    for bad_line, _, _ in BAD_LINES.values():
        lines += [bad_line, bad_line]
    lines += [b'{"text": "last"}']
    path = _write(tmp_path / "mixed.jsonl", _lines(*lines))
    bad = BadRecords()
    assert _documents(path, bad_records=bad) == [("mixed.jsonl:1", "first"),
                                                 ("mixed.jsonl:12", "last")]
    assert bad.count == 10
    assert bad.by_reason == {reason: 2 for reason in BAD_LINES}
    assert bad.examples == [f"{path}:2: not valid JSON (Expecting ',' delimiter: column 14)",
                            f"{path}:3: not valid JSON (Expecting ',' delimiter: column 14)",
                            f"{path}:4: record is not a JSON object (it is an array)",
                            f"{path}:5: record is not a JSON object (it is an array)",
                            f"{path}:6: record has no 'text' field (it has: id, content)"]


def test_bad_json_array_records_and_non_utf8_txt(tmp_path):
    array = _write(tmp_path / "a.json", json.dumps([{"text": "x"}, 7, {"body": "y"}]).encode())
    assert _strict_error(array).startswith(f"{array}: record 1: record is not a JSON object")
    bad = BadRecords()
    assert _documents(array, bad_records=bad) == [("a.json:0", "x")]
    assert bad.by_reason == {"not a JSON object": 1, "no 'text' field": 1}

    latin1 = _write(tmp_path / "latin1.txt", "abc café".encode("latin-1"))
    message = _strict_error(latin1)
    assert message.startswith(f"{latin1}: not UTF-8 (byte offset 7); fix the file or pass "
                              "--skip-bad-records")
    bad = BadRecords()
    assert _documents(latin1, bad_records=bad) == []
    assert (bad.count, bad.by_reason) == (1, {"not UTF-8": 1})


def test_field_names_with_newlines_keep_the_message_on_one_line(tmp_path):
    path = _write(tmp_path / "odd.jsonl", _lines(b'{"a\\nb": 1}'))
    assert "(it has: a\\nb)" in _strict_error(path)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst", ".json.gz"])
def test_truncated_compressed_file_is_an_error_even_when_skipping(tmp_path, suffix):
    data = _lines(*[b'{"text": "document %d"}' % index for index in range(3000)])
    path = tmp_path / f"cut{suffix}"
    compressed = _compress(data, suffix)
    path.write_bytes(compressed[: len(compressed) * 2 // 3])
    with pytest.raises(InputError) as caught:
        _documents(path, bad_records=BadRecords())
    message = str(caught.value)
    assert message.startswith(f"{path}: compressed data is truncated or corrupt")
    assert "\n" not in message


def test_documents_are_read_lazily(tmp_path):
    good = [b'{"text": "document %d"}' % index for index in range(3)]
    malformed = [b'{"text": broken %d' % index for index in range(50_000)]
    path = _write(tmp_path / "large.jsonl.gz", _lines(*good, *malformed))
    documents = read_documents(_only_input(path))
    assert list(itertools.islice(documents, 3)) == [
        ("large.jsonl.gz:1", "document 0"), ("large.jsonl.gz:2", "document 1"),
        ("large.jsonl.gz:3", "document 2")]
    with pytest.raises(InputError, match=r"large.jsonl.gz:4: not valid JSON"):
        next(documents)


def test_corrupt_parquet_and_arrow_files_are_errors_naming_the_file(tmp_path):
    parquet = _write_parquet(tmp_path / "p.parquet", {"text": [f"row {i}" for i in range(100)]})
    parquet.write_bytes(parquet.read_bytes()[:200])
    with pytest.raises(InputError, match=f"^{parquet}: not a readable Parquet file"):
        _documents(parquet, bad_records=BadRecords())
    directory = _write_saved_dataset_by_hand(tmp_path / "saved", [["a"]])
    (arrow_file,) = directory.glob("*.arrow")
    arrow_file.write_bytes(b"not arrow" * 20)
    with pytest.raises(InputError, match=f"^{arrow_file}: not a readable Arrow file"):
        _documents(directory)
