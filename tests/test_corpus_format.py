"""The corpus format of docs/CORPUS_FORMAT.md, on hand-made corpora: token dtypes, shards in
sub-folders merged by streaming's merge_index, and one-line errors for malformed corpora."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streaming import MDSWriter
from streaming.base.util import merge_index

from llmshearing.data.corpus import CorpusError, domain_split_dir, load_manifest
from llmshearing.data.loaders import build_train_dataloader, open_eval_splits

SEQ_LEN = 8


def write_split(split_dir: Path, rows, encoding: str = "ndarray:uint16", column: str = "tokens") -> None:
    dtype = np.dtype(encoding.split(":")[1]) if ":" in encoding else np.int64
    with MDSWriter(out=str(split_dir), columns={column: encoding}, compression=None) as writer:
        for row in rows:
            writer.write({column: np.asarray(row, dtype=dtype)})


def write_manifest(corpus: Path, names, drop=(), **overrides) -> Path:
    manifest = {
        "format_version": 2, "domains": list(names), "seq_len": SEQ_LEN, "vocab_size": 70001,
        "per_domain": {domain: {split: {"documents": 1, "tokens": 4 * SEQ_LEN, "samples": 4}
                                for split in ("train", "eval")} for domain in names},
        **overrides,
    }
    for key in drop:
        del manifest[key]
    path = corpus / "manifest.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def rows_from(first: int, count: int = 4) -> np.ndarray:
    return np.arange(first, first + count * SEQ_LEN).reshape(count, SEQ_LEN)


def make_corpus(root: Path, encoding: str, first_id: int = 0, vocab_size: int = 70001) -> Path:
    """One domain "d", 4 train and 4 eval samples, token ids counting up from ``first_id``."""
    for split, start in (("train", first_id), ("eval", first_id + 100)):
        write_split(root / "d" / split, rows_from(start), encoding)
    write_manifest(root, ["d"], vocab_size=vocab_size)
    return root


def train_rows(corpus: Path, domains=("d",)) -> list[np.ndarray]:
    loader = build_train_dataloader(corpus, list(domains), None, batch_size=2, seq_len=SEQ_LEN, seed=1,
                                    shuffle=False)
    return [row.numpy() for batch in loader for row in batch["input_ids"]]


def sorted_rows(rows) -> list[list[int]]:
    return sorted(np.asarray(row).tolist() for row in rows)


@pytest.mark.parametrize("encoding, first_id", [("ndarray:uint16", 65000), ("ndarray:uint32", 69800),
                                                ("ndarray:int32", 0), ("ndarray:int64", 7)])
def test_every_token_dtype_reads_back_exactly(tmp_path, encoding, first_id):
    corpus = make_corpus(tmp_path, encoding, first_id)
    evals = open_eval_splits(corpus, ["d"], SEQ_LEN)["d"]
    got = [evals[i]["input_ids"] for i in range(len(evals))]
    assert all(str(row.dtype) == "torch.int64" for row in got)
    assert np.array_equal(np.stack([row.numpy() for row in got]), rows_from(first_id + 100))
    assert sorted_rows(train_rows(corpus)) == sorted_rows(rows_from(first_id))


def test_uint32_ids_above_65535_reach_the_model_unchanged(tmp_path):
    corpus = make_corpus(tmp_path, "ndarray:uint32", first_id=70000 - 4 * SEQ_LEN - 100 + 1)
    evals = open_eval_splits(corpus, ["d"], SEQ_LEN)["d"]
    assert int(evals[3]["input_ids"].max()) == 70000  # the last id of a 70001-token vocabulary
    assert max(int(row.max()) for row in train_rows(corpus)) == 70000 - 100


def test_uint32_ids_outside_the_vocabulary_are_refused(tmp_path):
    corpus = make_corpus(tmp_path, "ndarray:uint32", first_id=70000, vocab_size=70001)
    with pytest.raises(CorpusError, match="sample 0: token id 70107 is outside the corpus's vocabulary of 70001"):
        open_eval_splits(corpus, ["d"], SEQ_LEN)["d"][0]


def test_shards_in_sub_folders_merged_by_merge_index_are_read(tmp_path):
    corpus = tmp_path
    for split, start in (("train", 0), ("eval", 1000)):
        split_dir = corpus / "d" / split
        for unit in range(2):
            write_split(split_dir / f"u{unit:05d}", rows_from(start + 100 * unit, count=3 + unit))
        merge_index([str(split_dir / f"u{unit:05d}" / "index.json") for unit in range(2)], str(split_dir))
        basenames = [shard["raw_data"]["basename"]
                     for shard in json.loads((split_dir / "index.json").read_text())["shards"]]
        assert basenames == ["u00000/shard.00000.mds", "u00001/shard.00000.mds"]
    write_manifest(corpus, ["d"])
    expected_eval = np.concatenate([rows_from(1000, 3), rows_from(1100, 4)])
    evals = open_eval_splits(corpus, ["d"], SEQ_LEN)["d"]
    assert np.array_equal(np.stack([evals[i]["input_ids"].numpy() for i in range(len(evals))]), expected_eval)
    got = train_rows(corpus)
    assert len(got) == 6  # 7 samples, drop_last with batch_size 2
    assert set(map(tuple, sorted_rows(got))) <= set(map(tuple, sorted_rows(np.concatenate([rows_from(0, 3),
                                                                                        rows_from(100, 4)]))))


def test_a_missing_shard_in_a_sub_folder_is_named(tmp_path):
    split_dir = tmp_path / "d" / "train"
    write_split(split_dir / "u00000", rows_from(0))
    merge_index([str(split_dir / "u00000" / "index.json")], str(split_dir))
    write_split(tmp_path / "d" / "eval", rows_from(0))
    write_manifest(tmp_path, ["d"])
    (split_dir / "u00000" / "shard.00000.mds").unlink()
    with pytest.raises(CorpusError, match=f"missing shard file {split_dir / 'u00000' / 'shard.00000.mds'}"):
        domain_split_dir(tmp_path, "d", "train")


def one_line_error(call) -> str:
    with pytest.raises(CorpusError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("key, described", [("vocab_size", "the tokenizer's vocabulary size"),
                                            ("seq_len", "tokens in each stored sample"),
                                            ("domains", "domain names"), ("per_domain", "per domain")])
def test_a_manifest_without_a_required_key_is_refused_in_one_line(tmp_path, key, described):
    path = write_manifest(tmp_path, ["d"], drop=[key])
    message = one_line_error(lambda: load_manifest(tmp_path))
    assert message.startswith(f"corpus manifest {path} lacks '{key}' ("), message
    assert described in message and "docs/CORPUS_FORMAT.md" in message


def test_the_missing_vocab_size_message_says_what_to_do(tmp_path):
    path = write_manifest(tmp_path, ["d"], drop=["vocab_size"])
    assert one_line_error(lambda: load_manifest(tmp_path)) == (
        f"corpus manifest {path} lacks 'vocab_size' (the tokenizer's vocabulary size, needed to check token "
        "ids); add it — see docs/CORPUS_FORMAT.md")


@pytest.mark.parametrize("key, value", [("vocab_size", 0), ("vocab_size", "49152"), ("vocab_size", None),
                                        ("vocab_size", True), ("seq_len", -1), ("seq_len", 8.0),
                                        ("domains", []), ("domains", "d"), ("domains", ["d", 3]),
                                        ("per_domain", ["d"])])
def test_a_manifest_key_of_the_wrong_type_is_refused_in_one_line(tmp_path, key, value):
    path = write_manifest(tmp_path, ["d"], **{key: value})
    message = one_line_error(lambda: load_manifest(tmp_path))
    assert message.startswith(f"corpus manifest {path} has '{key}' = {json.dumps(value)}, not "), message
    assert "docs/CORPUS_FORMAT.md" in message


def test_a_corpus_without_vocab_size_is_refused_by_the_loaders(tmp_path):
    make_corpus(tmp_path, "ndarray:uint16")
    path = write_manifest(tmp_path, ["d"], drop=["vocab_size"])
    for call in (lambda: open_eval_splits(tmp_path, ["d"], SEQ_LEN), lambda: train_rows(tmp_path)):
        assert one_line_error(call).startswith(f"corpus manifest {path} lacks 'vocab_size'")


def test_a_tokens_column_under_another_name_is_named_with_the_split(tmp_path):
    write_split(tmp_path / "d" / "train", rows_from(0), column="input_ids")
    write_split(tmp_path / "d" / "eval", rows_from(0), column="input_ids")
    write_manifest(tmp_path, ["d"])
    for split, call in (("eval", lambda: open_eval_splits(tmp_path, ["d"], SEQ_LEN)),
                        ("train", lambda: train_rows(tmp_path))):
        message = one_line_error(call)
        assert message.startswith(f"MDS split {tmp_path / 'd' / split} has no 'tokens' column "
                                  "(its columns: ['input_ids']); store the token ids as column 'tokens' ("), message
        assert "ndarray:uint16" in message and "docs/CORPUS_FORMAT.md" in message


@pytest.mark.parametrize("encoding", ["bytes", "ndarray", "ndarray:float32", "ndarray:int16", "ndarray:uint8"])
def test_a_tokens_column_of_another_encoding_is_named_with_the_accepted_ones(tmp_path, encoding):
    split_dir = tmp_path / "d" / "train"
    if encoding == "bytes":
        with MDSWriter(out=str(split_dir), columns={"tokens": "bytes"}) as writer:
            writer.write({"tokens": np.arange(SEQ_LEN, dtype=np.int64).tobytes()})
    else:
        write_split(split_dir, rows_from(0), encoding)
    write_manifest(tmp_path, ["d"])
    message = one_line_error(lambda: domain_split_dir(tmp_path, "d", "train"))
    assert message.startswith(f"MDS split {split_dir} stores column 'tokens' as '{encoding}' "
                              "(shard shard.00000.mds); accepted encodings: ndarray:uint16, ndarray:uint32, "
                              "ndarray:int32, ndarray:int64;"), message


def test_a_format_version_1_corpus_still_reads(tmp_path):
    for split, start in (("train", 0), ("eval", 100)):
        write_split(tmp_path / "d" / split, rows_from(start), "ndarray:int32")
    write_manifest(tmp_path, ["d"], format_version=1, vocab_size=49152, columns={"tokens": "ndarray:int32"},
                   max_train_tokens_per_domain=32, max_eval_tokens_per_domain=32, eos_token_id=0)
    evals = open_eval_splits(tmp_path, ["d"], SEQ_LEN)["d"]
    assert np.array_equal(evals[0]["input_ids"].numpy(), rows_from(100)[0])
    assert sorted_rows(train_rows(tmp_path)) == sorted_rows(rows_from(0))


def test_samples_read_without_validation_still_fail_in_one_line():
    from llmshearing.data.loaders import to_model_input

    with pytest.raises(CorpusError, match=r"^the sample has no 'tokens' column \(its columns: \['input_ids'\]\)"):
        to_model_input({"input_ids": np.arange(SEQ_LEN)}, SEQ_LEN, 100)
    with pytest.raises(CorpusError, match="^the sample's tokens are float32, not integer token ids"):
        to_model_input({"tokens": np.zeros(SEQ_LEN, np.float32)}, SEQ_LEN, 100)


def test_the_optional_cpt_split_is_read_like_the_others(tmp_path):
    make_corpus(tmp_path, "ndarray:uint16")
    with pytest.raises(CorpusError, match=f"'d' cpt split not found: {tmp_path / 'd' / 'cpt'}"):
        domain_split_dir(tmp_path, "d", "cpt")
    write_split(tmp_path / "d" / "cpt", rows_from(500))
    cpt = open_eval_splits(tmp_path, ["d"], SEQ_LEN, split="cpt")["d"]
    assert np.array_equal(np.stack([cpt[i]["input_ids"].numpy() for i in range(len(cpt))]), rows_from(500))


def test_samples_shorter_than_the_manifest_says_are_named_with_their_split(tmp_path):
    make_corpus(tmp_path, "ndarray:uint16")
    write_manifest(tmp_path, ["d"], seq_len=2 * SEQ_LEN)
    message = one_line_error(lambda: open_eval_splits(tmp_path, ["d"], 2 * SEQ_LEN)["d"][0])
    assert message.startswith(f"eval split {tmp_path / 'd' / 'eval'}, sample 0: the stored sample has {SEQ_LEN} "
                              f"tokens, fewer than seq_len={2 * SEQ_LEN}"), message


def test_a_remote_corpus_with_shards_in_sub_folders_is_mirrored_and_read(tmp_path):
    from llmshearing.data.remote import mirror_corpus

    remote = tmp_path / "remote"
    for split, start in (("train", 0), ("eval", 1000)):
        split_dir = remote / "d" / split
        for unit in range(2):
            write_split(split_dir / f"u{unit:05d}", rows_from(start + 100 * unit))
        merge_index([str(split_dir / f"u{unit:05d}" / "index.json") for unit in range(2)], str(split_dir))
    write_manifest(remote, ["d"])
    cache = tmp_path / "cache"
    mirror_corpus(str(remote), cache)
    assert (cache / "d" / "eval" / "u00001" / "shard.00000.mds").is_file()
    evals = open_eval_splits(cache, ["d"], SEQ_LEN)["d"]
    assert np.array_equal(np.stack([evals[i]["input_ids"].numpy() for i in range(len(evals))]),
                          np.concatenate([rows_from(1000), rows_from(1100)]))
    loader = build_train_dataloader(cache, ["d"], None, batch_size=2, seq_len=SEQ_LEN, seed=1, shuffle=False,
                                    remote=str(remote))
    got = [row.numpy() for batch in loader for row in batch["input_ids"]]
    assert sorted_rows(got) == sorted_rows(np.concatenate([rows_from(0), rows_from(100)]))
