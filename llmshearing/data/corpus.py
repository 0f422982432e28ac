"""Read and validate a corpus directory (the format is described in docs/CORPUS_FORMAT.md).

Every problem is reported as a one-line :class:`CorpusError` naming the offending path, what is
wrong and what to do, before any dataset is built on top of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmshearing.errors import LLMShearingError

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.json"
DOCUMENTS_NAME = "documents.json"  # per domain: {"train": [document ids], "eval": [...]}
SPLITS = ("train", "eval")  # every corpus has them
OPTIONAL_SPLITS = ("cpt",)  # a second train split, disjoint from both, for continued pre-training
FORMAT_DOC = "docs/CORPUS_FORMAT.md"
TOKEN_COLUMN = "tokens"
# MDS encodings of the token column every reader accepts (to_model_input casts them to int64).
TOKEN_ENCODINGS = ("ndarray:uint16", "ndarray:uint32", "ndarray:int32", "ndarray:int64")
# The manifest keys readers need, each with what it is (named when it is missing).
_REQUIRED_MANIFEST_KEYS = {
    "domains": "the list of domain names, one folder each",
    "seq_len": "the number of tokens in each stored sample",
    "per_domain": "per domain, the documents, tokens and samples of each split",
    "vocab_size": "the tokenizer's vocabulary size, needed to check token ids",
}


class CorpusError(LLMShearingError):
    """The corpus directory is missing, incomplete or corrupt."""


def _existing_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise CorpusError(f"{what} not found: {path}")
    return path


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CorpusError(f"{what} not found: {path}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorpusError(f"{what} is not readable JSON: {path} ({error})") from error
    if not isinstance(payload, dict):
        raise CorpusError(f"{what} is not a JSON object: {path}")
    return payload


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _manifest_problem(manifest: dict) -> str | None:
    """What is wrong with the required keys of a manifest (None when nothing)."""
    missing = [key for key in _REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        return "lacks " + " and ".join(f"'{key}' ({_REQUIRED_MANIFEST_KEYS[key]})" for key in missing) + \
            f"; add {'it' if len(missing) == 1 else 'them'}"
    domains = manifest["domains"]
    if not (isinstance(domains, list) and domains and all(isinstance(d, str) and d for d in domains)):
        return f"has 'domains' = {_short(domains)}, not a non-empty list of domain names; fix it"
    for key in ("seq_len", "vocab_size"):
        if not _is_positive_int(manifest[key]):
            return f"has '{key}' = {_short(manifest[key])}, not a positive integer; fix it"
    if not isinstance(manifest["per_domain"], dict):
        return (f"has 'per_domain' = {_short(manifest['per_domain'])}, not an object "
                "{domain: {split: {documents, tokens, samples}}}; fix it")
    return None


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_manifest(corpus_dir: str | Path) -> dict:
    """Load ``manifest.json`` of a corpus directory, checking its required keys: ``domains`` (a
    non-empty list of names), ``seq_len`` and ``vocab_size`` (positive ints), ``per_domain`` (an object)."""
    corpus_dir = _existing_dir(Path(corpus_dir), "corpus directory")
    path = corpus_dir / MANIFEST_NAME
    manifest = _read_json(path, "corpus manifest (is the corpus build complete?)")
    problem = _manifest_problem(manifest)
    if problem:
        raise CorpusError(f"corpus manifest {path} {problem} — see {FORMAT_DOC}")
    return manifest


def check_domains(manifest: dict, domains: list[str] | tuple[str, ...], corpus_dir: str | Path):
    """Raise CorpusError unless every requested domain is listed in the manifest."""
    unknown = [domain for domain in domains if domain not in manifest["domains"]]
    if unknown:
        raise CorpusError(f"domain(s) {unknown} have no data in corpus {corpus_dir}; "
                          f"available: {manifest['domains']}")


def validate_mds_dir(split_dir: Path) -> int:
    """Check an MDS directory's ``index.json`` and shard files; return its sample count."""
    index_path = split_dir / INDEX_NAME
    index = _read_json(index_path, "MDS index")
    shards = index.get("shards")
    if not isinstance(shards, list) or not shards:
        raise CorpusError(f"MDS index lists no shards: {index_path}")
    total_samples = 0
    try:
        for shard in shards:
            _check_token_column(split_dir, shard)
            _check_shard_file(split_dir, shard)
            total_samples += int(shard["samples"])
    except CorpusError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CorpusError(f"MDS index has a malformed shard entry: {index_path} "
                          f"({error!r})") from error
    return total_samples


def _check_token_column(split_dir: Path, shard: dict) -> None:
    """The shard must store the token ids as column "tokens" in one of TOKEN_ENCODINGS."""
    names, encodings = shard.get("column_names"), shard.get("column_encodings")
    if not isinstance(names, list) or not isinstance(encodings, list) or len(names) != len(encodings):
        raise CorpusError(f"MDS index {split_dir / INDEX_NAME} has a shard entry without matching "
                          f"'column_names' and 'column_encodings' ({_shard_name(shard)}); write the split "
                          f"with streaming.MDSWriter — see {FORMAT_DOC}")
    accepted = ", ".join(TOKEN_ENCODINGS)
    if TOKEN_COLUMN not in names:
        raise CorpusError(f"MDS split {split_dir} has no '{TOKEN_COLUMN}' column (its columns: {names}); "
                          f"store the token ids as column '{TOKEN_COLUMN}' ({accepted}) — see {FORMAT_DOC}")
    encoding = encodings[names.index(TOKEN_COLUMN)]
    if encoding not in TOKEN_ENCODINGS:
        raise CorpusError(f"MDS split {split_dir} stores column '{TOKEN_COLUMN}' as '{encoding}' "
                          f"({_shard_name(shard)}); accepted encodings: {accepted}; write it again with "
                          f"one of them — see {FORMAT_DOC}")


def _shard_name(shard: dict) -> str:
    raw = shard.get("raw_data")
    return f"shard {raw.get('basename')}" if isinstance(raw, dict) else "a shard"


def _check_shard_file(split_dir: Path, shard: dict) -> None:
    """A shard is usable when its raw file, or else its compressed file, has the listed size."""
    candidates = [shard["raw_data"], shard.get("zip_data")]
    problems = []
    for data in filter(None, candidates):
        path = split_dir / data["basename"]
        if not path.is_file():
            problems.append(f"missing shard file {path}")
        elif path.stat().st_size != int(data["bytes"]):
            problems.append(f"shard file {path} has {path.stat().st_size} bytes, "
                            f"index.json says {data['bytes']}")
        else:
            if data is shard["raw_data"]:
                _check_mds_header(path, int(shard["samples"]))
            return
    raise CorpusError("; ".join(problems))


def _check_mds_header(path: Path, samples: int) -> None:
    """An MDS shard starts with its sample count and sample offsets (uint32; then the shard's config,
    then the samples). They must fit the index and the file, or reading fails later, obscurely."""
    size = path.stat().st_size
    header_bytes = 4 * (samples + 2)
    with path.open("rb") as handle:
        header = np.frombuffer(handle.read(header_bytes), dtype="<u4") if size >= header_bytes else None
    if header is None or int(header[0]) != samples:
        raise CorpusError(f"shard file {path} is corrupt: its header does not hold the {samples} samples "
                          "index.json lists")
    offsets = header[1:].astype(np.int64)
    if offsets[0] < header_bytes or offsets[-1] != size or np.any(np.diff(offsets) < 0):
        raise CorpusError(f"shard file {path} is corrupt: its sample offsets do not fit the file")


def domain_split_dir(corpus_dir: str | Path, domain: str, split: str) -> Path:
    """Validated MDS directory of one domain's split (``train``, ``eval`` or, when the corpus has
    it, ``cpt``)."""
    if split not in SPLITS + OPTIONAL_SPLITS:
        raise CorpusError(f"unknown split '{split}' (expected one of {SPLITS + OPTIONAL_SPLITS}) in {corpus_dir}")
    manifest = load_manifest(corpus_dir)
    check_domains(manifest, [domain], corpus_dir)
    split_dir = _existing_dir(Path(corpus_dir) / domain / split, f"'{domain}' {split} split")
    validate_mds_dir(split_dir)
    return split_dir


def domain_document_ids(corpus_dir: str | Path, domain: str) -> dict[str, list[str]]:
    """Ids of the source documents in each split of a domain (from ``documents.json``)."""
    check_domains(load_manifest(corpus_dir), [domain], corpus_dir)
    return _read_json(Path(corpus_dir) / domain / DOCUMENTS_NAME, "document list")
