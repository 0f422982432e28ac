"""The eval pool of a domain of few or uneven documents: sized from its documents, so eval fills.

A pool sized from token counts alone (eval's share of the budgets, times a margin) holds too few
tokens when a handful of long documents carry most of the text and none of them is drawn: the
README quick start (150 licence files, 20k eval tokens) got 17,920. A domain small enough to read
first gets the smallest pool that fills eval, still drawn by document so train and eval share none.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmshearing.data.prepare.cli import main
from llmshearing.data.prepare.units import document_draw, split_draw

SEP = "<|endoftext|>"
SEQ = 16
WORDS = 100


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, SEP: 1, **{f"w{index}": 2 + index for index in range(WORDS)}}
    model = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", eos_token=SEP).save_pretrained(str(folder))
    return folder


def _texts(folder: Path, lengths: list[int], seed: int = 0) -> Path:
    """One .txt document per length (in words; each document is its words plus the separator)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for index, length in enumerate(lengths):
        (folder / f"doc{index:03d}.txt").write_text(" ".join(f"w{rng.randrange(WORDS)}" for _ in range(length)))
    return folder


def _prepare(capsys, tokenizer: Path, out: Path, folder: Path, *extra) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in ["--tokenizer", tokenizer, "--out", out, "--seq-len", SEQ, "--workers", 1,
                                      "--no-progress", "--domain", f"notes={folder}/*.txt", *extra]])
    return code, capsys.readouterr().err


# 36 short notes and 4 long documents that hold most of the text
UNEVEN = [10] * 36 + [3000] * 4
EVAL_TOKENS = 600


def _default_fraction(folder: Path) -> float:
    """The pool sized from the budgets alone (train 'all': the domain's estimate from its bytes)."""
    estimated = sum(path.stat().st_size for path in folder.iterdir()) // 4
    return split_draw(EVAL_TOKENS, None, None, estimated).eval_fraction


@pytest.mark.parametrize("units", ["one unit", "a unit per file"])
def test_uneven_documents_fill_the_eval_tokens_asked(tmp_path, capsys, tokenizer, units):
    folder = _texts(tmp_path / "texts", UNEVEN)
    default = _default_fraction(folder)
    unit_mb = ["--unit-mb", 64 if units == "one unit" else 0.000001]
    # the pool sized from the token counts alone falls short here (the quick start's failure)
    code, err = _prepare(capsys, tokenizer, tmp_path / "by-tokens", folder, "--eval-tokens", EVAL_TOKENS,
                         "--eval-pool-fraction", default, *unit_mb)
    assert code == 2 and "--eval-pool-fraction" in err.strip().splitlines()[-1], err

    code, err = _prepare(capsys, tokenizer, tmp_path / "out", folder, "--eval-tokens", EVAL_TOKENS, *unit_mb)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    fraction = manifest["eval_pool_fraction"]["notes"]
    assert fraction > default and f"[notes] eval pool: {fraction:.3g} of the documents" in err
    eval_rows = -(-EVAL_TOKENS // SEQ)
    stats = manifest["per_domain"]["notes"]
    assert (stats["eval"]["samples"], stats["eval"]["tokens"]) == (eval_rows, eval_rows * SEQ)
    # every document in one split, by its draw alone; the long documents left to train are many
    documents = json.loads((tmp_path / "out" / "notes" / "documents.json").read_text())
    draws = {split: [document_draw(manifest["seed"], "notes", doc) for doc in ids] for split, ids in documents.items()}
    assert not set(documents["train"]) & set(documents["eval"])
    assert max(draws["eval"]) < fraction <= min(draws["train"])
    assert stats["train"]["tokens"] > 3 * stats["eval"]["tokens"]
    # the smallest such pool: without the last document drawn into it, eval would fall short (a unit's
    # incomplete tail is dropped: with a unit per file, the short notes give no sample)
    pool = [doc for doc in (f"doc{index:03d}.txt" for index in range(len(UNEVEN)))
            if document_draw(manifest["seed"], "notes", doc) < fraction]
    assert set(documents["eval"]) <= set(pool)
    last = max(pool, key=lambda doc: document_draw(manifest["seed"], "notes", doc))
    tokens = [UNEVEN[int(doc[3:6])] + 1 for doc in pool if doc != last]
    without_last = sum(tokens) // SEQ if units == "one unit" else sum(count // SEQ for count in tokens)
    assert without_last < eval_rows

    # deterministic: the same command elsewhere, and --num-shards pieces merged, give the same corpus
    for out, extra in ((tmp_path / "again", []), (tmp_path / "pieces", ["--num-shards", 2, "--shard-index", 0])):
        code, err = _prepare(capsys, tokenizer, out, folder, "--eval-tokens", EVAL_TOKENS, *unit_mb, *extra)
        assert code == 0, err
    code, err = _prepare(capsys, tokenizer, tmp_path / "pieces", folder, "--eval-tokens", EVAL_TOKENS, *unit_mb,
                         "--num-shards", 2, "--shard-index", 1)
    assert code == 0, err
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "pieces")]) == 0
    for out in ("again", "pieces"):
        again = json.loads((tmp_path / out / "manifest.json").read_text())
        assert again["eval_pool_fraction"] == manifest["eval_pool_fraction"]
        assert json.loads((tmp_path / out / "notes" / "documents.json").read_text()) == documents


def test_even_documents_keep_the_pool_sized_from_the_budgets(tmp_path, capsys, tokenizer):
    folder = _texts(tmp_path / "texts", [60] * 200)
    code, err = _prepare(capsys, tokenizer, tmp_path / "out", folder, "--eval-tokens", EVAL_TOKENS)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["eval_pool_fraction"]["notes"] == _default_fraction(folder)
    assert "eval pool:" not in err
    assert manifest["per_domain"]["notes"]["eval"]["tokens"] == -(-EVAL_TOKENS // SEQ) * SEQ


def test_a_domain_without_the_text_says_so_in_one_line(tmp_path, capsys, tokenizer):
    folder = _texts(tmp_path / "texts", [40] * 12)  # 492 tokens in all: half of them cannot give 600
    code, err = _prepare(capsys, tokenizer, tmp_path / "out", folder, "--eval-tokens", EVAL_TOKENS)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: domain 'notes' has too little text for 608 eval tokens: "
                                              "the half of its 12 documents an eval pool may take holds "), err
    assert "--short-domains cap" in lines[-1] and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written

    code, err = _prepare(capsys, tokenizer, tmp_path / "cap", folder, "--eval-tokens", EVAL_TOKENS,
                         "--short-domains", "cap")
    assert code == 0, err
    manifest = json.loads((tmp_path / "cap" / "manifest.json").read_text())
    assert manifest["eval_pool_fraction"]["notes"] == 0.5
    assert 0 < manifest["per_domain"]["notes"]["eval"]["tokens"] < 608 and "capped" in err
