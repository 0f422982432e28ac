"""``python -m llmshearing.data.prepare``: the corpus it writes, its budgets, pieces, resume and errors.

Tokenizers are built here (WordLevel over whitespace-split words ``w0``, ``w1``, ...), so every
token maps back to one word and a sample can be traced to the source documents exactly.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from llmshearing.data.prepare import pieces as prepare_pieces
from llmshearing.data.prepare import unit_writer as prepare_unit_writer
from llmshearing.data.prepare.cli import main
from llmshearing.data.prepare.units import SplitDraw, Unit, document_draw, processing_order

REPO_ROOT = Path(__file__).resolve().parents[1]
SEP = "<|endoftext|>"
BOS = "<s>"
SEQ = 16
TINY_UNITS = ["--unit-mb", "0.000001"]  # every input file is a unit of its own


# --- tokenizers ------------------------------------------------------------------------------------


def _word_tokenizer(folder: Path, words: int, bos: bool = False) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", SEP] + ([BOS] if bos else [])
    vocab = {token: index for index, token in enumerate(specials)}
    vocab.update((f"w{index}", len(specials) + index) for index in range(words))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    extra = {}
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{BOS} $A",
                                                                 special_tokens=[(BOS, vocab[BOS])])
        extra["bos_token"] = BOS
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", eos_token=SEP, **extra)
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tokenizers_dir(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {"plain": _word_tokenizer(root / "plain", 300),
            "bos": _word_tokenizer(root / "bos", 300, bos=True)}


def _vocab(tokenizer_dir: Path) -> dict[str, int]:
    return json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]


# --- inputs ------------------------------------------------------------------------------------------


class Corpus:
    """Source documents written to disk, remembered per input with the ids the reader gives them."""

    def __init__(self, root: Path, seed: int = 0, words: int = 300):
        self.root, self.rng, self.words = root, random.Random(seed), words
        self.inputs: dict[str, dict[Path, list[tuple[str, list[str]]]]] = {}
        self._seen: set[tuple[str, ...]] = set()

    def text(self, low: int = 3, high: int = 30, top: int | None = None) -> list[str]:
        while True:
            top_word = self.words if top is None else top
            words = [f"w{self.rng.randrange(top_word)}" for _ in range(self.rng.randint(low, high))]
            if tuple(words) not in self._seen:
                self._seen.add(tuple(words))
                return words

    def folder(self, domain: str) -> Path:
        path = self.root / domain
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _record(self, domain: str, path: Path, docs) -> Path:
        self.inputs.setdefault(domain, {})[path] = docs
        return path

    def jsonl(self, domain: str, name: str, count: int, gz: bool = False, **text_options) -> Path:
        path, docs, lines = self.folder(domain) / name, [], []
        for line in range(1, count + 1):
            if line % 7 == 3:  # a blank line and a whitespace-only text: no document, line numbers go on
                lines.append("" if line % 2 else json.dumps({"text": "  \n "}))
                continue
            words = self.text(**text_options)
            docs.append((f"{name}:{line}", words))
            lines.append(json.dumps({"text": " ".join(words), "meta": line}))
        data = ("\n".join(lines) + "\n").encode()
        path.write_bytes(gzip.compress(data) if gz else data)
        return self._record(domain, path, docs)

    def json_array(self, domain: str, name: str, count: int) -> Path:
        path, docs = self.folder(domain) / name, []
        for index in range(count):
            docs.append((f"{name}:{index}", self.text()))
        path.write_text(json.dumps([{"text": " ".join(words)} for _, words in docs]))
        return self._record(domain, path, docs)

    def txt(self, domain: str, name: str) -> Path:
        path, words = self.folder(domain) / name, self.text(40, 90)
        lines = [" ".join(words[start:start + 7]) for start in range(0, len(words), 7)]
        path.write_text("\n".join(lines) + "\n")
        return self._record(domain, path, [(name, words)])

    def parquet(self, domain: str, name: str, count: int) -> Path:
        import pyarrow
        import pyarrow.parquet

        path, docs = self.folder(domain) / name, []
        for row in range(count):
            docs.append((f"{name}:{row}", self.text()))
        table = pyarrow.table({"id": list(range(count)), "text": [" ".join(words) for _, words in docs]})
        pyarrow.parquet.write_table(table, path, row_group_size=7)
        return self._record(domain, path, docs)

    def saved_dataset(self, domain: str, name: str, count: int) -> Path:
        datasets = pytest.importorskip("datasets")
        path, docs = self.folder(domain) / name, []
        for row in range(count):
            docs.append((f"{name}:{row}", self.text()))
        datasets.Dataset.from_dict({"text": [" ".join(words) for _, words in docs]}).save_to_disk(str(path))
        return self._record(domain, path, docs)

    def docs(self, domain: str) -> dict[str, list[str]]:
        return {doc_id: words for docs in self.inputs[domain].values() for doc_id, words in docs}


def _two_domain_corpus(root: Path, files_per_domain: int = 5, docs_per_file: int = 30, seed: int = 0) -> Corpus:
    corpus = Corpus(root, seed)
    for domain in ("a", "b"):
        for index in range(files_per_domain):
            corpus.jsonl(domain, f"part{index:02d}.jsonl", docs_per_file)
    return corpus


# --- running and reading -----------------------------------------------------------------------------


def run_cli(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def prepare(capsys, tokenizer: Path, out: Path, corpus_or_domains, *extra) -> tuple[int, str, str]:
    if isinstance(corpus_or_domains, Corpus):
        domains = [f"{name}={corpus_or_domains.root / name}" for name in corpus_or_domains.inputs]
    else:
        domains = corpus_or_domains
    args = ["--tokenizer", tokenizer, "--out", out, "--seq-len", SEQ, "--workers", "1", "--no-progress"]
    for spec in domains:
        args += ["--domain", spec]
    return run_cli(capsys, *args, *extra)


def prepared(capsys, *args) -> dict:
    code, _, err = prepare(capsys, *args)
    assert code == 0, err
    return json.loads((Path(args[1]) / "manifest.json").read_text())


def assert_error(result: tuple[int, str, str], out: Path | None, *needles: str) -> str:
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2, err  # bad input
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    message = lines[-1]
    for needle in needles:
        assert needle in message, (needle, message)
    if out is not None:
        assert not (out / "manifest.json").exists()
    return message


def read_samples(split_dir: Path) -> np.ndarray:
    from streaming import LocalDataset

    samples = LocalDataset(local=str(split_dir))
    rows = [np.asarray(samples[index]["tokens"]) for index in range(len(samples))]
    return np.stack(rows) if rows else np.zeros((0, SEQ), dtype=np.int64)


def read_corpus(out: Path) -> dict:
    """{domain: {split: samples}} plus each domain's documents.json, as read from the merged indexes."""
    manifest = json.loads((out / "manifest.json").read_text())
    samples = {domain: {split: read_samples(out / domain / split) for split in manifest["splits"]}
               for domain in manifest["domains"]}
    documents = {domain: json.loads((out / domain / "documents.json").read_text())
                 for domain in manifest["domains"]}
    return {"samples": samples, "documents": documents, "manifest": manifest}


def assert_same_corpus(first: dict, second: dict, whole_per_domain: bool = True) -> None:
    assert first["manifest"]["domains"] == second["manifest"]["domains"]
    for domain, splits in first["samples"].items():
        assert splits.keys() == second["samples"][domain].keys()
        for split, samples in splits.items():
            other = second["samples"][domain][split]
            assert samples.dtype == other.dtype and np.array_equal(samples, other), (domain, split)
    assert first["documents"] == second["documents"]
    for domain, stats in first["manifest"]["per_domain"].items():
        other = second["manifest"]["per_domain"][domain]
        if whole_per_domain:
            assert stats == other, domain
        for split in first["manifest"]["splits"]:
            assert stats[split] == other[split], (domain, split)


def folders_of(split_dir: Path) -> list[str]:
    """The sub-folders the merged index takes samples from, in order."""
    folders = []
    for shard in json.loads((split_dir / "index.json").read_text())["shards"]:
        folder = os.path.dirname(shard["raw_data"]["basename"])
        if folder not in folders:
            folders.append(folder)
    return folders


def expected_samples(corpus: Corpus, domain: str, vocab: dict[str, int], seed: int, draw: SplitDraw,
                     budget_rows: dict[str, int | None], bos: bool) -> dict[str, np.ndarray]:
    """The samples of each split, rebuilt from the source documents: one unit per input (tiny
    --unit-mb), units in the seeded order, documents drawn into splits by their ids, per unit
    [bos] + words + [separator] concatenated and cut into SEQ-token rows, the tail dropped."""
    inputs = sorted(corpus.inputs[domain], key=str)
    stubs = [Unit(f"u{index:05d}", (), 0, read=None) for index in range(len(inputs))]
    prefix = [vocab[BOS]] if bos else []
    rows: dict[str, list[np.ndarray]] = {split: [] for split in budget_rows}
    for stub in processing_order(stubs, seed, domain):
        streams: dict[str, list[int]] = {split: [] for split in budget_rows}
        for doc_id, words in corpus.inputs[domain][inputs[int(stub.id[1:])]]:
            split = draw.split_of(document_draw(seed, domain, doc_id))
            streams[split] += prefix + [vocab[word] for word in words] + [vocab[SEP]]
        for split, tokens in streams.items():
            whole = len(tokens) // SEQ
            rows[split].append(np.asarray(tokens[:whole * SEQ], dtype=np.int64).reshape(whole, SEQ))
    return {split: np.concatenate(parts)[:budget_rows[split]] for split, parts in rows.items()}


def segments(samples: np.ndarray, separator: int) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """The stream cut at separators: whole segments, and the unterminated tail."""
    stream = samples.reshape(-1).tolist()
    whole, current = [], []
    for token in stream:
        if token == separator:
            whole.append(tuple(current))
            current = []
        else:
            current.append(token)
    return whole, tuple(current)


# --- 1. round trip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
def test_round_trip_multi_format(tmp_path, capsys, tokenizers_dir, bos):
    tokenizer = tokenizers_dir["bos" if bos else "plain"]
    vocab = _vocab(tokenizer)
    corpus = Corpus(tmp_path / "in")
    corpus.jsonl("web", "a.jsonl", 25)
    corpus.jsonl("web", "b.jsonl.gz", 25, gz=True)
    corpus.json_array("web", "c.json", 6)
    corpus.txt("web", "d.txt")
    corpus.txt("web", "e.txt")
    corpus.parquet("books", "p.parquet", 30)
    corpus.saved_dataset("books", "saved", 30)
    corpus.jsonl("books", "z.jsonl", 12)
    out = tmp_path / "out"
    manifest = prepared(capsys, tokenizer, out, corpus, "--train-tokens", "all", "--eval-tokens", "48",
                        "--eval-pool-fraction", "0.2", *TINY_UNITS)
    assert manifest["splits"] == ["train", "eval"]
    assert manifest["eval_pool_fraction"] == {"web": 0.2, "books": 0.2}
    assert manifest["token_dtype"] == "uint16" and manifest["columns"] == {"tokens": "ndarray:uint16"}
    assert manifest["eos_token_id"] == vocab[SEP] and manifest["eos_token"] == SEP
    assert manifest["bos_token_id"] == (vocab[BOS] if bos else None)
    word_of = {index: word for word, index in vocab.items()}

    for domain in ("web", "books"):
        source = corpus.docs(domain)
        by_tokens = {tuple(([vocab[BOS]] if bos else []) + [vocab[word] for word in words]): doc_id
                     for doc_id, words in source.items()}
        draw = SplitDraw(manifest["eval_pool_fraction"][domain])
        expected = expected_samples(corpus, domain, vocab, manifest["seed"], draw,
                                    {"train": None, "eval": 3}, bos)
        documents = json.loads((out / domain / "documents.json").read_text())
        info = manifest["per_domain"][domain]
        assert info["documents_read"] == len(source) and info["bad_records"] == 0
        assert info["units"] == len(corpus.inputs[domain])
        for split in ("train", "eval"):
            split_dir = out / domain / split
            samples = read_samples(split_dir)
            assert samples.shape[1] == SEQ and samples.dtype == np.uint16
            assert np.array_equal(samples.astype(np.int64), expected[split]), (domain, split)
            assert info[split]["samples"] == len(samples) and info[split]["tokens"] == len(samples) * SEQ
            # independently of the draw: per unit folder, documents whole between separators, in file order
            order = list(source)
            seen = []
            for folder in folders_of(split_dir):
                whole, tail = segments(read_samples(split_dir / folder), vocab[SEP])
                ids = [by_tokens[segment] for segment in whole]  # KeyError: not a source document
                positions = [order.index(doc_id) for doc_id in ids]
                assert positions == sorted(positions), (domain, split, folder)
                if tail:  # the unit's tail is cut: the start of a later document of the unit
                    following = [doc_id for tokens, doc_id in by_tokens.items()
                                 if tokens[:len(tail)] == tail and order.index(doc_id) > max(positions, default=-1)]
                    assert following, (domain, split, folder)
                    ids.append(min(following, key=order.index))
                seen += ids
                if bos:
                    stream = read_samples(split_dir / folder).reshape(-1)
                    assert stream[0] == vocab[BOS]
                    after = np.flatnonzero(stream[:-1] == vocab[SEP]) + 1
                    assert (stream[after] == vocab[BOS]).all()
            assert seen == documents[split], (domain, split)
            words = " ".join(word_of[int(token)] for token in samples[0])
            assert "[UNK]" not in words
        assert len(documents["eval"]) > 0 and len(documents["train"]) > len(documents["eval"])


def test_round_trip_smollm2(tmp_path, capsys, monkeypatch):
    """The real SmolLM2 BPE tokenizer: decoded documents come back as the source texts."""
    from llmshearing.assets import smollm2_gguf_path
    from llmshearing.data.prepare import cli

    try:
        smollm2_gguf_path()
    except Exception as error:  # noqa: BLE001 - the package may be absent
        pytest.skip(f"SmolLM2 tokenizer unavailable: {error}")
    loaded = []  # the command's own tokenizer, kept to check with (loading it takes seconds)
    real_load = cli.load_tokenizer
    monkeypatch.setattr(cli, "load_tokenizer", lambda *args: loaded.append(real_load(*args)) or loaded[-1])
    rng = random.Random(3)
    vocabulary = ["alpha", "beta", "gamma", "delta", "über", "naïve", "x=1;", "42", "\n", "  ", "日本"]
    texts = ["".join(rng.choice(vocabulary) + rng.choice([" ", "", ", "]) for _ in range(rng.randint(3, 20)))
             .strip() for _ in range(60)]
    folder = tmp_path / "in" / "mix"
    folder.mkdir(parents=True)
    (folder / "t.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "--tokenizer", "smollm2", "--out", out, "--seq-len", 32, "--workers", 1,
                           "--no-progress", "--domain", f"mix={folder}", "--eval-tokens", 96,
                           "--eval-pool-fraction", 0.3)
    assert code == 0, err
    tokenizer, = loaded
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["eos_token"] == SEP and manifest["bos_token_id"] is None
    encoded = {tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts}
    for split in ("train", "eval"):
        samples = read_samples(out / "mix" / split)
        whole, _ = segments(samples, manifest["eos_token_id"])
        assert whole
        assert all(segment in encoded for segment in whole), split
        decoded = [tokenizer.decode(list(segment), clean_up_tokenization_spaces=False) for segment in whole]
        assert all(text in texts for text in decoded), split


# --- 2. disjoint splits ------------------------------------------------------------------------------------


def test_train_eval_cpt_share_no_document(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    vocab = _vocab(tokenizer)
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=4, docs_per_file=40)
    out = tmp_path / "out"
    manifest = prepared(capsys, tokenizer, out, corpus, "--eval-tokens", "80", "--cpt-tokens", "600",
                        "--train-tokens", "1000", *TINY_UNITS)
    assert manifest["splits"] == ["train", "eval", "cpt"]
    for domain in ("a", "b"):
        documents = json.loads((out / domain / "documents.json").read_text())
        sets = {split: set(ids) for split, ids in documents.items()}
        assert all(len(ids) == len(sets[split]) for split, ids in documents.items())
        assert sets.keys() == {"train", "eval", "cpt"} and all(sets.values())
        assert not sets["train"] & sets["eval"] and not sets["train"] & sets["cpt"] and not sets["eval"] & sets["cpt"]
        # from the samples themselves: every whole document lies in one split only
        by_tokens = {tuple(vocab[word] for word in words): doc_id for doc_id, words in corpus.docs(domain).items()}
        found = {}
        for split in ("train", "eval", "cpt"):
            found[split] = set()
            for folder in folders_of(out / domain / split):  # a unit's stream starts with a whole document
                whole, _ = segments(read_samples(out / domain / split / folder), vocab[SEP])
                found[split] |= {by_tokens[segment] for segment in whole}
            assert found[split] and found[split] <= sets[split]
        assert not found["train"] & found["eval"] and not found["train"] & found["cpt"]
        assert not found["eval"] & found["cpt"]
        draws = {split: [document_draw(manifest["seed"], domain, doc_id) for doc_id in ids]
                 for split, ids in documents.items()}
        eval_fraction = manifest["eval_pool_fraction"][domain]
        assert max(draws["eval"]) < eval_fraction <= min(draws["cpt"]) and max(draws["cpt"]) < min(draws["train"])


# --- 3. budgets --------------------------------------------------------------------------------------------


def test_budgets_and_proportions(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=4, docs_per_file=40)
    out = tmp_path / "out"
    manifest = prepared(capsys, tokenizer, out, corpus, "--eval-tokens", "40", "--train-tokens", "200",
                        "--cpt-tokens", "100", *TINY_UNITS)
    want = {"eval": 3, "train": 7, "cpt": 4}  # ceil(40/16), ceil(100/16), ceil(50/16)
    assert manifest["budgets"] == {"train_tokens": {"a": 100, "b": 100}, "eval_tokens": {"a": 40, "b": 40},
                                   "cpt_tokens": {"a": 50, "b": 50}}
    for domain in ("a", "b"):
        for split, rows in want.items():
            assert len(read_samples(out / domain / split)) == rows, (domain, split)
            assert manifest["per_domain"][domain][split]["samples"] == rows
            assert manifest["per_domain"][domain][split]["tokens"] == rows * SEQ

    out = tmp_path / "weighted"
    manifest = prepared(capsys, tokenizer, out, corpus, "--eval-tokens", "16", "--train-tokens", "640",
                        "--proportions", "a=0.75,b=0.25", *TINY_UNITS)
    train = {domain: len(read_samples(out / domain / "train")) for domain in ("a", "b")}
    assert train == {"a": 30, "b": 10}
    assert {domain: manifest["per_domain"][domain]["train"]["samples"] for domain in train} == train

    per_domain = prepared(capsys, tokenizer, tmp_path / "per-domain", corpus, "--eval-tokens", "16",
                          "--train-tokens-per-domain", "33", *TINY_UNITS)
    assert all(per_domain["per_domain"][domain]["train"]["samples"] == 3 for domain in ("a", "b"))

    refused = tmp_path / "refused"
    message = assert_error(prepare(capsys, tokenizer, refused, [f"cc={corpus.root / 'a'}", f"mine={corpus.root / 'b'}"],
                                   "--train-tokens", "100", "--proportions", "redpajama"), refused,
                           "redpajama", "'mine'")
    assert "'cc'" not in message.split("missing")[1].split(")")[0]
    assert not refused.exists()


# --- 4. vocabulary above 65,536 -------------------------------------------------------------------------


def test_large_vocabulary_is_uint32(tmp_path, capsys):
    from llmshearing.data.loaders import open_eval_splits

    tokenizer = _word_tokenizer(tmp_path / "big", 70_000)
    vocab = _vocab(tokenizer)
    corpus = Corpus(tmp_path / "in", words=70_000)
    for index in range(3):
        corpus.jsonl("big", f"f{index}.jsonl", 20, low=10, high=30)
    out = tmp_path / "out"
    manifest = prepared(capsys, tokenizer, out, corpus, "--eval-tokens", "32", "--eval-pool-fraction", "0.2",
                        *TINY_UNITS)
    assert manifest["vocab_size"] == len(vocab) == 70_002
    assert manifest["token_dtype"] == "uint32" and manifest["columns"] == {"tokens": "ndarray:uint32"}
    expected = expected_samples(corpus, "big", vocab, manifest["seed"], SplitDraw(manifest["eval_pool_fraction"]["big"]),
                                {"train": None, "eval": 2}, bos=False)
    assert expected["train"].max() > 65_535
    for split in ("train", "eval"):
        dataset = open_eval_splits(out, ["big"], SEQ, split=split)["big"]
        got = np.stack([dataset[index]["input_ids"].numpy() for index in range(len(dataset))])
        assert np.array_equal(got, expected[split]), split
    assert read_samples(out / "big" / "train").dtype == np.uint32


# --- 5. pieces + merge == one process ------------------------------------------------------------------


def test_sharded_pieces_merge_to_the_one_process_corpus(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=7, docs_per_file=12)
    budgets = ["--eval-tokens", "60", "--train-tokens", "900", "--cpt-tokens", "300", "--eval-pool-fraction",
               "0.15", *TINY_UNITS]
    single = tmp_path / "single"
    prepared(capsys, tokenizer, single, corpus, *budgets)
    sharded = tmp_path / "sharded"
    for index in (0, 2):
        code, _, err = prepare(capsys, tokenizer, sharded, corpus, *budgets, "--num-shards", 3,
                               "--shard-index", index)
        assert code == 0, err
        assert "merge" in err and not (sharded / "manifest.json").exists()
    assert_error(run_cli(capsys, "merge", sharded), sharded, "pieces [1] of 3", "--num-shards 3")
    code, _, err = prepare(capsys, tokenizer, sharded, corpus, *budgets, "--num-shards", 3, "--shard-index", 1)
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "merge", sharded)
    assert code == 0, err
    assert "train samples" in stdout

    one, pieces = read_corpus(single), read_corpus(sharded)
    assert_same_corpus(one, pieces, whole_per_domain=False)
    for domain in ("a", "b"):
        assert pieces["manifest"]["per_domain"][domain]["units"] == 7
        assert one["manifest"]["per_domain"][domain]["units"] < 7  # one process stopped at the budgets
    assert {key: value for key, value in one["manifest"].items() if key not in ("per_domain", "created_by")} == \
        {key: value for key, value in pieces["manifest"].items() if key not in ("per_domain", "created_by")}
    # the merge cut units to the budget
    assert any("-first" in folder for domain in ("a", "b") for split in ("train", "eval", "cpt")
               for folder in folders_of(sharded / domain / split))

    # with every token taken (train: all), the whole per-domain statistics agree too
    everything = ["--eval-tokens", "60", "--train-tokens", "all", "--eval-pool-fraction", "0.15", *TINY_UNITS]
    single_all, sharded_all = tmp_path / "single-all", tmp_path / "sharded-all"
    prepared(capsys, tokenizer, single_all, corpus, *everything)
    for index in range(3):
        assert prepare(capsys, tokenizer, sharded_all, corpus, *everything, "--num-shards", 3,
                       "--shard-index", index)[0] == 0
    assert run_cli(capsys, "merge", sharded_all)[0] == 0
    assert_same_corpus(read_corpus(single_all), read_corpus(sharded_all))


# --- 6. bad input ---------------------------------------------------------------------------------------


def test_malformed_records(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    corpus = Corpus(tmp_path / "in")
    corpus.jsonl("a", "good.jsonl", 40)
    bad = corpus.folder("a") / "ok-then-bad.jsonl"
    bad.write_text('{"text": "w1 w2 w3"}\n{"text": "w4 w5"\n{"text": "w6 w7 w8"}\n')
    out = tmp_path / "out"
    budgets = ["--eval-tokens", "16", "--eval-pool-fraction", "0.2"]
    assert_error(prepare(capsys, tokenizer, out, corpus, *budgets), out,
                 f"{bad}:2", "not valid JSON", "--skip-bad-records")
    skipped = tmp_path / "skipped"
    manifest = prepared(capsys, tokenizer, skipped, corpus, *budgets, "--skip-bad-records")
    assert manifest["per_domain"]["a"]["bad_records"] == 1
    assert manifest["per_domain"]["a"]["documents_read"] == len(corpus.docs("a")) + 2
    # the failed run's folder: the same command with --skip-bad-records, as the error says
    code, _, err = prepare(capsys, tokenizer, out, corpus, *budgets, "--skip-bad-records")
    assert code == 0, err
    assert "resuming with skip_bad_records=True" in err
    assert_same_corpus(read_corpus(out), read_corpus(skipped))
    # the other way round is refused: units prepared with --skip-bad-records may have skipped records
    unfinished = tmp_path / "unfinished"
    assert_error(prepare(capsys, tokenizer, unfinished, corpus, *budgets, "--skip-bad-records",
                         "--train-tokens", "1M"), unfinished, "--short-domains")
    assert_error(prepare(capsys, tokenizer, unfinished, corpus, *budgets, "--train-tokens", "1M"), unfinished,
                 "unfinished preparation", "differing: skip_bad_records")

    no_field = tmp_path / "in2" / "a"
    no_field.mkdir(parents=True)
    (no_field / "x.jsonl").write_text('{"body": "w1 w2"}\n')
    assert_error(prepare(capsys, tokenizer, tmp_path / "o2", [f"a={no_field}"]), tmp_path / "o2",
                 "x.jsonl:1", "'text'", "--text-field")

    not_utf8 = tmp_path / "in3" / "a"
    not_utf8.mkdir(parents=True)
    (not_utf8 / "latin1.txt").write_bytes("caf\xe9 w1 w2".encode("latin-1"))
    assert_error(prepare(capsys, tokenizer, tmp_path / "o3", [f"a={not_utf8}"]), tmp_path / "o3",
                 "latin1.txt", "UTF-8")
    (not_utf8 / "latin1.txt").unlink()
    (not_utf8 / "lines.jsonl").write_bytes(b'{"text": "w1"}\n{"text": "caf\xe9"}\n')
    assert_error(prepare(capsys, tokenizer, tmp_path / "o4", [f"a={not_utf8}"]), tmp_path / "o4",
                 "lines.jsonl:2", "UTF-8")


def test_missing_or_empty_inputs(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    out = tmp_path / "out"
    assert_error(prepare(capsys, tokenizer, out, [f"a={tmp_path / 'nowhere'}/*.jsonl"]), out,
                 "matches nothing")
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "none.jsonl").write_text("")
    (empty / "blank.jsonl").write_text('\n{"text": "   "}\n')
    assert_error(prepare(capsys, tokenizer, out, [f"a={empty}"]), out, "domain 'a'", "0 documents read")


def test_short_domains(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    corpus = Corpus(tmp_path / "in")
    corpus.jsonl("small", "s.jsonl", 30)
    budget = ["--eval-tokens", "16", "--train-tokens-per-domain", "100k", "--eval-pool-fraction", "0.3"]
    out = tmp_path / "out"
    message = assert_error(prepare(capsys, tokenizer, out, corpus, *budget), out,
                           "domain 'small'", "of the 100,000 asked", "--short-domains")
    had = int(message.split(" has ")[1].split(" train tokens")[0].replace(",", ""))

    capped = prepared(capsys, tokenizer, tmp_path / "cap", corpus, *budget, "--short-domains", "cap")
    train = capped["per_domain"]["small"]["train"]
    assert train["tokens"] == had and train["samples"] == had // SEQ < 100_000 // SEQ
    capped_samples = read_samples(tmp_path / "cap" / "small" / "train")
    assert len(capped_samples) == train["samples"]

    repeated = prepared(capsys, tokenizer, tmp_path / "repeat", corpus, *budget, "--short-domains", "repeat")
    train = repeated["per_domain"]["small"]["train"]
    rows = -(-100_000 // SEQ)
    assert train["samples"] == rows and train["repeated_from_samples"] == len(capped_samples)
    samples = read_samples(tmp_path / "repeat" / "small" / "train")
    assert len(samples) == rows
    assert np.array_equal(samples, np.concatenate([capped_samples] * (rows // len(capped_samples) + 1))[:rows])
    assert repeated["per_domain"]["small"]["eval"] == capped["per_domain"]["small"]["eval"]

    # the failed run's folder: the same command with --short-domains cap, as the error says
    code, _, err = prepare(capsys, tokenizer, out, corpus, *budget, "--short-domains", "cap")
    assert code == 0, err
    assert "resuming with short_domains=cap" in err
    assert_same_corpus(read_corpus(out), read_corpus(tmp_path / "cap"))


def test_output_folder_rules(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=2, docs_per_file=20)
    out = tmp_path / "out"
    prepared(capsys, tokenizer, out, corpus, "--eval-tokens", "16")
    assert_error(prepare(capsys, tokenizer, out, corpus, "--eval-tokens", "16"), None,
                 "already holds a prepared corpus", "--overwrite")
    assert (out / "manifest.json").is_file()
    code, _, err = prepare(capsys, tokenizer, out, [f"b={corpus.root / 'b'}"], "--eval-tokens", "32", "--overwrite")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["domains"] == ["b"] and manifest["per_domain"]["b"]["eval"]["samples"] == 2
    assert not (out / "a").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert_error(prepare(capsys, tokenizer, foreign, corpus, *extra), foreign, "not empty")
        assert [path.name for path in foreign.iterdir()] == ["notes.txt"]
        assert (foreign / "notes.txt").read_text() == "mine"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_error(prepare(capsys, tokenizer, afile, corpus), None, "is a file")


def test_bad_arguments(tmp_path, capsys, tokenizers_dir):
    tokenizer = tokenizers_dir["plain"]
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=1, docs_per_file=5)
    out = tmp_path / "out"
    assert_error(prepare(capsys, tmp_path / "no-tokenizer", out, corpus), out, "no-tokenizer")
    (tmp_path / "empty-tok").mkdir()
    assert_error(prepare(capsys, tmp_path / "empty-tok", out, corpus), out, "empty-tok")
    (tmp_path / "bad-tok").mkdir()
    (tmp_path / "bad-tok" / "tokenizer.json").write_text("{not json")
    assert_error(prepare(capsys, tmp_path / "bad-tok", out, corpus), out, "could not load a tokenizer")
    assert_error(prepare(capsys, tokenizer, out, corpus, "--train-tokens", "lots"), out, "--train-tokens", "'lots'")
    assert_error(prepare(capsys, tokenizer, out, corpus, "--eval-tokens", "0.2"), out, "--eval-tokens")
    assert_error(prepare(capsys, tokenizer, out, [str(corpus.root / "a")]), out, "is not NAME=PATH")
    assert_error(prepare(capsys, tokenizer, out, [f"bad name={corpus.root / 'a'}"]), out, "domain name")
    assert_error(prepare(capsys, tokenizer, out, corpus, "--proportions", "a=1,b=x"), out, "--proportions")
    assert_error(prepare(capsys, tokenizer, out, corpus, "--num-shards", "2", "--shard-index", "2"), out,
                 "--shard-index")
    assert not out.exists()


# --- 7. interrupted runs ----------------------------------------------------------------------------------


def _resume_inputs(tmp_path: Path) -> tuple[Corpus, list[str]]:
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=5, docs_per_file=15)
    return corpus, ["--eval-tokens", "48", "--train-tokens", "1200", *TINY_UNITS]


def test_interrupted_run_resumes_to_the_same_corpus(tmp_path, capsys, tokenizers_dir, monkeypatch):
    tokenizer = tokenizers_dir["plain"]
    corpus, budgets = _resume_inputs(tmp_path)
    reference = tmp_path / "reference"
    prepared(capsys, tokenizer, reference, corpus, *budgets)

    # stopped in the middle of a unit: rows of the second unit written, its record not
    out = tmp_path / "out"
    original_add, calls = prepare_unit_writer.SplitChunker.add, {"units": 0, "adds": 0}
    original_finish = prepare_pieces._finish_unit

    def finish_then_count(*args, **kwargs):
        original_finish(*args, **kwargs)
        calls["units"] += 1

    def add_then_interrupt(self, *args):
        original_add(self, *args)
        if calls["units"] == 1:
            calls["adds"] += 1
            if calls["adds"] == 8:
                raise KeyboardInterrupt

    monkeypatch.setattr(prepare_pieces, "_finish_unit", finish_then_count)
    monkeypatch.setattr(prepare_unit_writer.SplitChunker, "add", add_then_interrupt)
    code, _, err = prepare(capsys, tokenizer, out, corpus, *budgets)
    monkeypatch.undo()
    assert code == 130 and "resume" in err
    assert not (out / "manifest.json").exists()
    assert len(list((out / ".prepare" / "units" / "a").glob("*.json"))) == 1
    assert any((out / "a" / "train").glob("u*/shard.*.mds"))  # the cut-off unit's partial rows

    assert_error(prepare(capsys, tokenizer, out, corpus, *budgets, "--seed", "7"), out,
                 "unfinished preparation", "differing: ", "seed", "--overwrite")
    message = assert_error(prepare(capsys, tokenizer, out, corpus, "--eval-tokens", "64", "--train-tokens",
                                   "1200", *TINY_UNITS), out, "differing: domains")
    assert "seed" not in message
    code, _, err = prepare(capsys, tokenizer, out, corpus, *budgets)
    assert code == 0, err
    assert "resuming: 1 of" in err
    assert_same_corpus(read_corpus(reference), read_corpus(out))


def test_killed_process_resumes(tmp_path, capsys, tokenizers_dir):
    """A real process, killed (SIGKILL) after its first unit: no manifest; the same command resumes."""
    tokenizer = tokenizers_dir["plain"]
    corpus, budgets = _resume_inputs(tmp_path)
    out = tmp_path / "out"
    args = ["--tokenizer", str(tokenizer), "--out", str(out), "--seq-len", str(SEQ), "--workers", "1",
            "--no-progress", "--domain", f"a={corpus.root / 'a'}", "--domain", f"b={corpus.root / 'b'}", *budgets]
    slow = ("import sys, time\n"
            "from llmshearing.data.prepare import pieces\n"
            "finish = pieces._finish_unit\n"
            "def slow_finish(*args, **kwargs):\n"
            "    finish(*args, **kwargs)\n"
            "    time.sleep(60)\n"
            "pieces._finish_unit = slow_finish\n"
            "from llmshearing.data.prepare.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    process = subprocess.Popen([sys.executable, "-c", slow, *args], cwd=REPO_ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / ".prepare" / "units" / "a"
    try:
        deadline = time.monotonic() + 60
        while not any(records.glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert any(records.glob("*.json")), "the first unit was never recorded"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert not (out / "manifest.json").exists()

    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "resuming" in err
    reference = tmp_path / "reference"
    prepared(capsys, tokenizer, reference, corpus, *budgets)
    assert_same_corpus(read_corpus(reference), read_corpus(out))


# --- 8. workers -------------------------------------------------------------------------------------------


def test_workers_write_the_same_samples(tmp_path, capsys, tokenizers_dir, monkeypatch):
    from llmshearing.data.prepare import tokenizing

    monkeypatch.setattr(tokenizing, "BATCH_DOCUMENTS", 4)  # many batches in flight
    tokenizer = tokenizers_dir["plain"]
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=6, docs_per_file=20)
    budgets = ["--eval-tokens", "48", "--train-tokens", "1000", "--cpt-tokens", "200", *TINY_UNITS]
    prepared(capsys, tokenizer, tmp_path / "one", corpus, *budgets)
    prepared(capsys, tokenizer, tmp_path / "two", corpus, *budgets, "--workers", "2")
    assert_same_corpus(read_corpus(tmp_path / "one"), read_corpus(tmp_path / "two"), whole_per_domain=False)


# --- 9. the training loader ---------------------------------------------------------------------------------


def test_training_loader_reads_the_prepared_corpus(tmp_path, capsys, tokenizers_dir):
    import torch

    from llmshearing.data.loaders import build_eval_dataloaders, build_train_dataloader

    tokenizer = tokenizers_dir["plain"]
    corpus = _two_domain_corpus(tmp_path / "in", files_per_domain=2, docs_per_file=30)
    out = tmp_path / "out"
    manifest = prepared(capsys, tokenizer, out, corpus, "--eval-tokens", "64", "--train-tokens", "800")
    stored = {tuple(row) for domain in ("a", "b") for row in read_samples(out / domain / "train").tolist()}
    loader = build_train_dataloader(out, ["a", "b"], [0.5, 0.5], batch_size=4, seq_len=SEQ, seed=1)
    batches = [batch for _, batch in zip(range(5), loader)]
    assert len(batches) == 5
    for batch in batches:
        ids = batch["input_ids"]
        assert ids.shape == (4, SEQ) and ids.dtype == torch.int64
        assert int(ids.max()) < manifest["vocab_size"]
        assert all(tuple(row) in stored for row in ids.tolist())
    cropped = build_train_dataloader(out, ["a"], None, batch_size=2, seq_len=SEQ // 2, seed=1)
    assert next(iter(cropped))["input_ids"].shape == (2, SEQ // 2)
    evals = build_eval_dataloaders(out, ["a", "b"], batch_size=2, seq_len=SEQ)
    assert {domain: sum(len(batch["input_ids"]) for batch in loader) for domain, loader in evals.items()} == \
        {"a": 4, "b": 4}


def test_workers_stop_when_the_run_ends_at_once(tokenizers_dir, monkeypatch):
    """A pool ended right after it started (a resume with nothing left, an error at the first record)
    stops its workers, also under a Python-level SIGTERM handler such as the one Composer installs."""
    from transformers import AutoTokenizer

    from llmshearing.data.prepare.tokenizing import DocumentEncoder, ParallelEncoder

    previous = signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    try:
        encoder = DocumentEncoder(AutoTokenizer.from_pretrained(str(tokenizers_dir["plain"])), np.uint16)
        started = time.monotonic()
        for _ in range(6):
            with ParallelEncoder(encoder, 3) as parallel:
                assert [tag for tag, _ in parallel.map([("x", ["w1 w2"])])] == ["x"]
            with ParallelEncoder(encoder, 3):
                pass
        assert time.monotonic() - started < 60
    finally:
        signal.signal(signal.SIGTERM, previous)
