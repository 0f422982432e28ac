"""Turn a user's own text files into a stream of documents ``(document_id, text)``.

A domain is given as a file, a directory or a glob (see :func:`resolve_domain_inputs`); each input
file is read by :func:`read_documents`. Formats, chosen by the file name's suffix:

* ``.jsonl`` / ``.json``: JSON lines, one record (a JSON object) per line, the text in one field
  (``--text-field``, default ``text``). A ``.json`` file whose first non-blank character is ``[``
  is one JSON array of such records instead.
* ``.jsonl.gz`` / ``.json.gz`` (gzip) and ``.jsonl.zst`` / ``.json.zst`` (zstandard): the same,
  compressed.
* ``.parquet``: the text column of a Parquet file.
* ``.txt``: the whole file is one document (UTF-8).
* a directory written by ``datasets.Dataset.save_to_disk`` (``dataset_info.json``, ``state.json``
  and ``*.arrow`` files): the text column of its Arrow files, read without the ``datasets``
  library.

Every problem is an :class:`InputError` with a one-line message naming the file (and the line or
row) and what to do about it.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import io
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

from llmshearing.errors import LLMShearingError

# Longest first, so that ".jsonl.gz" is matched before ".gz"-less ".jsonl" would be tried.
_FORMAT_BY_SUFFIX = {
    ".jsonl.gz": "jsonl.gz",
    ".json.gz": "json.gz",
    ".jsonl.zst": "jsonl.zst",
    ".json.zst": "json.zst",
    ".jsonl": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "txt",
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_FORMAT_BY_SUFFIX)
ARROW_DATASET_FORMAT = "arrow_dataset"

_GLOB_CHARACTERS = "*?["
_DATASET_MARKERS = ("dataset_info.json", "state.json")
_DATASET_DICT_MARKER = "dataset_dict.json"
_READ_CHUNK_BYTES = 1 << 16
_RECORD_BATCH_ROWS = 1024
_MAX_NAMES_SHOWN = 10
_MAX_EXAMPLES = 5
_SKIP_HINT = "pass --skip-bad-records to skip such records"


class InputError(LLMShearingError):
    """An input file or domain spec that cannot be read as documents. The message is one line."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


@dataclass(frozen=True)
class InputFile:
    """One input of a domain: a file, or a ``datasets.save_to_disk`` directory."""

    path: Path
    key: str
    size: int
    format: str


@dataclass
class BadRecords:
    """Bad records skipped with --skip-bad-records: how many, how many per reason, examples."""

    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, location: str, reason: str, detail: str | None = None) -> None:
        """Count one bad record; ``detail`` (the specific message) only goes into examples."""
        self.count += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(_one_line(f"{location}: {detail or reason}"))


# --- resolving a domain spec into input files ----------------------------------------------------


def resolve_domain_inputs(spec: str) -> list[InputFile]:
    """The input files of one domain spec, sorted by key.

    ``spec`` is a file, a directory (searched recursively for files with a supported suffix;
    hidden files and folders are skipped; a ``datasets.save_to_disk`` directory in it is one input)
    or a glob (``*``, ``?``, ``[...]``, ``**`` for any depth). A key is the input's path relative to
    the directory (for a glob: the directory before the first wildcard), or the file name when
    ``spec`` is a single file.
    """
    path = Path(os.path.abspath(os.path.expanduser(spec)))
    if path.exists():
        return _resolve_existing_path(path, spec)
    if _is_glob(spec):
        return _resolve_glob(spec)
    raise InputError(f"input path does not exist: {spec}")


def root_domain_specs(root: str | Path) -> dict[str, str]:
    """``--root DIR``: ``{domain: spec}`` per sub-folder of DIR (the folder name is the domain)."""
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    if not root.is_dir():
        raise InputError(f"--root directory does not exist: {root}")
    entries = sorted((entry for entry in root.iterdir() if not _is_hidden(entry.name)),
                     key=lambda entry: entry.name)
    loose_files = [entry.name for entry in entries if not entry.is_dir()]
    if loose_files:
        raise InputError(f"--root {root} holds files that belong to no domain: "
                         f"{_name_list(loose_files)}; put each domain's files in a sub-folder "
                         f"named after the domain")
    if not entries:
        raise InputError(f"--root {root} has no sub-folder; put each domain's files in a "
                         f"sub-folder named after the domain")
    return {entry.name: str(entry) for entry in entries}


def _resolve_existing_path(path: Path, spec: str) -> list[InputFile]:
    if path.is_dir():
        inputs = _inputs_in_directory(path, key_base=path)
        if not inputs:
            raise InputError(f"directory {spec} holds no supported input file "
                             f"(supported: {_supported_list()})")
        return inputs
    file_format = _format_of(path.name)
    if file_format is None:
        raise InputError(f"unsupported input file {spec}: the name must end in one of "
                         f"{_supported_list()}")
    return [_input_file(path, path.name, file_format)]


def _resolve_glob(spec: str) -> list[InputFile]:
    base = _glob_base(Path(os.path.abspath(os.path.expanduser(spec))))
    matches = sorted(set(glob.glob(os.path.expanduser(spec), recursive=True)))
    if not matches:
        raise InputError(f"glob {spec} matches nothing")
    inputs: dict[Path, InputFile] = {}
    for match in matches:
        path = Path(os.path.abspath(match))
        candidates = (_inputs_in_directory(path, key_base=base) if path.is_dir()
                      else _supported_file(path, key_base=base))
        inputs.update((candidate.path, candidate) for candidate in candidates)
    if not inputs:
        raise InputError(f"glob {spec} matches {len(matches)} path(s) but no supported input "
                         f"file (supported: {_supported_list()})")
    return sorted(inputs.values(), key=lambda item: item.key)


def _inputs_in_directory(directory: Path, key_base: Path) -> list[InputFile]:
    inputs = []
    visited_directories = set()
    for current, subdirectories, file_names in os.walk(directory, followlinks=True):
        current = Path(current)
        # Following symlinked folders is what a RedPajama-style layout needs; remember real paths
        # so that a link cycle cannot recurse forever.
        real_path = os.path.realpath(current)
        if real_path in visited_directories:
            subdirectories.clear()
            continue
        visited_directories.add(real_path)
        _reject_dataset_dict(current)
        if _is_saved_dataset(current):
            subdirectories.clear()
            key = _relative_key(current, key_base) if current != key_base else current.name
            inputs.append(_saved_dataset_input(current, key))
            continue
        subdirectories[:] = sorted(name for name in subdirectories if not _is_hidden(name))
        for name in sorted(file_names):
            if not _is_hidden(name):
                inputs.extend(_supported_file(current / name, key_base))
    return sorted(inputs, key=lambda item: item.key)


def _supported_file(path: Path, key_base: Path) -> list[InputFile]:
    file_format = _format_of(path.name)
    if file_format is None or not path.is_file():
        return []
    return [_input_file(path, _relative_key(path, key_base), file_format)]


def _input_file(path: Path, key: str, file_format: str) -> InputFile:
    return InputFile(path=path, key=key, size=path.stat().st_size, format=file_format)


def _saved_dataset_input(directory: Path, key: str) -> InputFile:
    size = sum(path.stat().st_size for path in _saved_dataset_arrow_files(directory))
    return InputFile(path=directory, key=key, size=size, format=ARROW_DATASET_FORMAT)


def _is_saved_dataset(directory: Path) -> bool:
    return (all((directory / marker).is_file() for marker in _DATASET_MARKERS)
            and any(directory.glob("*.arrow")))


def _reject_dataset_dict(directory: Path) -> None:
    marker = directory / _DATASET_DICT_MARKER
    if not marker.is_file():
        return
    splits = _dataset_dict_splits(directory, marker)
    example = directory / (splits[0] if splits else "train")
    raise InputError(f"{directory} is a datasets DatasetDict with splits {_name_list(splits)}; "
                     f"pass one split's folder, e.g. {example}")


def _dataset_dict_splits(directory: Path, marker: Path) -> list[str]:
    try:
        splits = json.loads(marker.read_text(encoding="utf-8")).get("splits")
    except (OSError, ValueError, AttributeError):
        splits = None
    if isinstance(splits, list) and all(isinstance(split, str) for split in splits):
        return splits
    return sorted(entry.name for entry in directory.iterdir()
                  if entry.is_dir() and not _is_hidden(entry.name))


def _saved_dataset_arrow_files(directory: Path) -> list[Path]:
    """The ``.arrow`` files of a save_to_disk directory, in the order state.json lists them."""
    state_path = directory / "state.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{state_path}: not a readable datasets state file ({error!r}); "
                         f"save the dataset again with Dataset.save_to_disk") from error
    paths = [directory / name for name in names]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise InputError(f"{directory}: state.json lists missing Arrow file(s) "
                         f"{_name_list(missing)}; save the dataset again with "
                         f"Dataset.save_to_disk")
    return paths


def _format_of(file_name: str) -> str | None:
    lowered = file_name.lower()
    for suffix, file_format in _FORMAT_BY_SUFFIX.items():
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return file_format
    return None


def _is_glob(spec: str) -> bool:
    return any(character in spec for character in _GLOB_CHARACTERS)


def _glob_base(pattern: Path) -> Path:
    """The directory made of the pattern's leading components that hold no wildcard."""
    fixed_parts = []
    for part in pattern.parts[:-1]:
        if _is_glob(part):
            break
        fixed_parts.append(part)
    return Path(*fixed_parts)


def _relative_key(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _supported_list() -> str:
    return ", ".join(SUPPORTED_SUFFIXES) + " or a datasets.save_to_disk directory"


def _name_list(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_NAMES_SHOWN else "")


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


# --- reading documents ---------------------------------------------------------------------------


class _BadRecord(Exception):
    """One record that is not a usable document; skippable with --skip-bad-records."""

    def __init__(self, reason: str, detail: str | None = None, remedy: str = "fix the record"):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail or reason
        self.remedy = remedy


def read_documents(source: InputFile, text_field: str = "text",
                   bad_records: BadRecords | None = None) -> Iterator[tuple[str, str]]:
    """Yield ``(document_id, text)`` for every document of ``source``, in file order.

    Streaming: memory holds one record (JSON lines, .txt: the whole file is the record) or one
    record batch (Parquet, Arrow) at a time -- except a ``.json`` file that is a single JSON
    array, which is parsed whole. ``document_id`` is ``f"{source.key}:{n}"``: ``n`` is the
    1-based line number for JSON lines, the 0-based index for a JSON array's records and for
    Parquet / Arrow rows; for ``.txt`` it is ``source.key``. Empty or whitespace-only texts are
    skipped silently.

    Bad records (malformed JSON, a record that is not an object, no ``text_field``, a text that is
    not a string, bytes that are not UTF-8): with ``bad_records=None`` the first one raises
    :class:`InputError`; otherwise each is counted in ``bad_records`` and skipped. Problems of a
    whole file (truncated compressed stream, missing Parquet/Arrow column) always raise.
    """
    documents = _RECORD_READERS[source.format](source, text_field)
    for location, document_id, text in _skipping_bad_records(documents, bad_records):
        if text.strip():
            yield document_id, text


# A reader yields (location, document_id, text or the _BadRecord explaining why there is none).
_Item = tuple[str, str, "str | _BadRecord"]


def _skipping_bad_records(items: Iterable[_Item], bad_records: BadRecords | None,
                          ) -> Iterator[tuple[str, str, str]]:
    for location, document_id, text in items:
        if not isinstance(text, _BadRecord):
            yield location, document_id, text
        elif bad_records is None:
            raise InputError(f"{location}: {text.detail}; {text.remedy} or {_SKIP_HINT}")
        else:
            bad_records.add(location, text.reason, text.detail)


# --- JSON lines and JSON arrays ------------------------------------------------------------------


def _read_json_file(source: InputFile, text_field: str) -> Iterator[_Item]:
    may_be_array = source.format.split(".")[0] == "json"
    if may_be_array and _first_significant_byte(source) == b"[":
        yield from _read_json_array(source, text_field)
    else:
        yield from _read_json_lines(source, text_field)


def _read_json_lines(source: InputFile, text_field: str) -> Iterator[_Item]:
    with _guard_stream(source), _open_binary(source) as stream:
        for line_number, raw_line in enumerate(stream, start=1):
            location = f"{source.path}:{line_number}"
            document_id = f"{source.key}:{line_number}"
            yield location, document_id, _text_of_json_line(raw_line, line_number, text_field)


def _text_of_json_line(raw_line: bytes, line_number: int, text_field: str) -> str | _BadRecord:
    if line_number == 1:
        raw_line = raw_line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        return _BadRecord("not UTF-8", f"not UTF-8 (byte offset {error.start} in the line)",
                          remedy="fix the line")
    if not line.strip():
        return ""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return _BadRecord("not valid JSON", f"not valid JSON ({error.msg}: column {error.colno})",
                          remedy="fix the line")
    return _text_of_record(record, text_field, remedy="fix the line")


def _read_json_array(source: InputFile, text_field: str) -> Iterator[_Item]:
    with _guard_stream(source), _open_binary(source) as stream:
        content = stream.read()
    try:
        records = json.loads(content.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(f"{source.path}: not UTF-8 (byte offset {error.start}); fix the file"
                         ) from error
    except json.JSONDecodeError as error:
        raise InputError(f"{source.path}: not a valid JSON array ({error.msg}: line {error.lineno}"
                         f" column {error.colno}); fix the file") from error
    for index, record in enumerate(records):
        location = f"{source.path}: record {index}"
        yield location, f"{source.key}:{index}", _text_of_record(record, text_field)


def _text_of_record(record: object, text_field: str, remedy: str = "fix the record",
                    ) -> str | _BadRecord:
    if not isinstance(record, dict):
        return _BadRecord("not a JSON object",
                          f"record is not a JSON object (it is {_json_type(record)})", remedy)
    if text_field not in record:
        fields = _name_list([str(name) for name in record]) or "no fields"
        return _BadRecord(f"no '{text_field}' field",
                          f"record has no '{text_field}' field (it has: {fields})",
                          remedy="choose the field with --text-field")
    text = record[text_field]
    if not isinstance(text, str):
        return _BadRecord(f"'{text_field}' is not a string",
                          f"'{text_field}' is {_json_type(text)}, not a string", remedy)
    return text


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", list: "an array",
             dict: "an object", str: "a string"}
    return names.get(type(value), type(value).__name__)


def _first_significant_byte(source: InputFile) -> bytes:
    """The first byte that is not blank (nor a byte-order mark), or b"" for a blank file."""
    with _guard_stream(source), _open_binary(source) as stream:
        while chunk := stream.read(_READ_CHUNK_BYTES):
            significant = chunk.removeprefix(b"\xef\xbb\xbf").lstrip()
            if significant:
                return significant[:1]
    return b""


def _open_binary(source: InputFile) -> BinaryIO:
    if source.format.endswith(".gz"):
        return gzip.open(source.path, "rb")
    if source.format.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(open(source.path, "rb")), _READ_CHUNK_BYTES)
    return open(source.path, "rb")


@contextlib.contextmanager
def _guard_stream(source: InputFile) -> Iterator[None]:
    """Turn an unreadable or cut-off (compressed) stream into an InputError naming the file."""
    try:
        yield
    except _stream_errors(source) as error:
        if source.format.endswith((".gz", ".zst")):
            raise InputError(f"{source.path}: compressed data is truncated or corrupt ({error}); "
                             f"download or compress the file again") from error
        raise InputError(f"{source.path}: cannot read ({error})") from error


def _stream_errors(source: InputFile) -> tuple[type[BaseException], ...]:
    # gzip reports a cut-off stream as EOFError, a damaged one as BadGzipFile (OSError) or
    # zlib.error.
    errors: tuple[type[BaseException], ...] = (EOFError, OSError, zlib.error)
    if source.format.endswith(".zst"):
        import zstandard

        errors += (zstandard.ZstdError,)
    return errors


class _ZstdFrames(io.RawIOBase):
    """Decompressed bytes of a zstandard file (all its frames), read chunk by chunk.

    ``zstandard.ZstdDecompressor().stream_reader`` returns a cut-off stream's bytes and then a
    clean end of file, so a truncated download would go unnoticed; this reader raises EOFError
    when the file ends inside a frame.
    """

    def __init__(self, compressed: BinaryIO):
        import zstandard

        self._compressed = compressed
        self._new_frame = zstandard.ZstdDecompressor().decompressobj
        self._frame = self._new_frame()
        self._frame_started = False
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if not self._decompress_next_chunk():
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _decompress_next_chunk(self) -> bool:
        chunk = self._compressed.read(_READ_CHUNK_BYTES)
        if not chunk:
            if self._frame_started:
                raise EOFError("zstd stream ended in the middle of a frame")
            return False
        output = []
        while chunk:
            output.append(self._frame.decompress(chunk))
            self._frame_started = not self._frame.eof
            chunk = self._frame.unused_data if self._frame.eof else b""
            if self._frame.eof:
                self._frame = self._new_frame()
        self._pending = b"".join(output)
        return True

    def close(self) -> None:
        if not self.closed:
            self._compressed.close()
        super().close()


# --- plain text -----------------------------------------------------------------------------------


def _read_text_file(source: InputFile, text_field: str) -> Iterator[_Item]:
    location = str(source.path)
    try:
        content = source.path.read_bytes()
    except OSError as error:
        raise InputError(f"{source.path}: cannot read ({error})") from error
    try:
        text = content.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        text = _BadRecord("not UTF-8", f"not UTF-8 (byte offset {error.start})",
                          remedy="fix the file")
    yield location, source.key, text


# --- Parquet and Arrow ----------------------------------------------------------------------------


def _read_parquet_file(source: InputFile, text_field: str) -> Iterator[_Item]:
    import pyarrow
    import pyarrow.parquet

    try:
        parquet_file = pyarrow.parquet.ParquetFile(source.path)
        _require_column(source.path, parquet_file.schema_arrow, text_field)
        batches = parquet_file.iter_batches(columns=[text_field], batch_size=_RECORD_BATCH_ROWS)
        yield from _rows_of_batches(source, batches, text_field, first_row=0)
    except (pyarrow.ArrowException, OSError) as error:
        raise InputError(f"{source.path}: not a readable Parquet file ({error})") from error


def _read_saved_dataset(source: InputFile, text_field: str) -> Iterator[_Item]:
    # Row numbers run on across the dataset's Arrow files: the dataset is one input with one key.
    row = 0
    for arrow_path in _saved_dataset_arrow_files(source.path):
        for item in _read_arrow_file(source, arrow_path, text_field, first_row=row):
            row += 1
            yield item


def _read_arrow_file(source: InputFile, arrow_path: Path, text_field: str,
                     first_row: int) -> Iterator[_Item]:
    import pyarrow

    try:
        with _arrow_batches(arrow_path) as (schema, batches):
            _require_column(arrow_path, schema, text_field)
            yield from _rows_of_batches(source, batches, text_field, first_row)
    except (pyarrow.ArrowException, OSError) as error:
        raise InputError(f"{arrow_path}: not a readable Arrow file ({error}); save the dataset "
                         f"again with Dataset.save_to_disk") from error


@contextlib.contextmanager
def _arrow_batches(path: Path) -> Iterator[tuple[object, Iterator]]:
    """(schema, record batches) of an Arrow file: the IPC stream format that ``datasets`` writes,
    or else the IPC file format."""
    import pyarrow
    import pyarrow.ipc

    with pyarrow.OSFile(str(path), "rb") as handle:
        try:
            reader = pyarrow.ipc.open_stream(handle)
        except pyarrow.ArrowInvalid:
            reader = None
        if reader is not None:
            yield reader.schema, iter(reader)
            return
    with pyarrow.OSFile(str(path), "rb") as handle:
        reader = pyarrow.ipc.open_file(handle)
        yield reader.schema, (reader.get_batch(index) for index in range(reader.num_record_batches))


def _require_column(path: Path, schema, text_field: str) -> None:
    import pyarrow

    if text_field not in schema.names:
        raise InputError(f"{path}: no column '{text_field}' (it has: {_name_list(schema.names)}); "
                         f"choose the column with --text-field")
    column_type = schema.field(text_field).type
    if pyarrow.types.is_dictionary(column_type):
        column_type = column_type.value_type
    if not (pyarrow.types.is_string(column_type) or pyarrow.types.is_large_string(column_type)
            or _is_string_view(column_type)):
        raise InputError(f"{path}: column '{text_field}' holds {column_type}, not strings; "
                         f"choose the column with --text-field")


def _is_string_view(column_type) -> bool:
    import pyarrow

    is_string_view = getattr(pyarrow.types, "is_string_view", None)  # pyarrow >= 16
    return bool(is_string_view and is_string_view(column_type))


def _rows_of_batches(source: InputFile, batches: Iterable, text_field: str,
                     first_row: int) -> Iterator[_Item]:
    row = first_row
    for batch in batches:
        for text in batch.column(batch.schema.get_field_index(text_field)).to_pylist():
            if text is None:
                text = _BadRecord(f"'{text_field}' is not a string", f"'{text_field}' is null",
                                  remedy="fill in the row")
            yield f"{source.path}: row {row}", f"{source.key}:{row}", text
            row += 1


_RECORD_READERS: dict[str, Callable[[InputFile, str], Iterator[_Item]]] = {
    "jsonl": _read_json_file,
    "json": _read_json_file,
    "jsonl.gz": _read_json_file,
    "json.gz": _read_json_file,
    "jsonl.zst": _read_json_file,
    "json.zst": _read_json_file,
    "parquet": _read_parquet_file,
    "txt": _read_text_file,
    ARROW_DATASET_FORMAT: _read_saved_dataset,
}
