"""Checks of the eval command's input, each failing with one line that names the fix."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from llmshearing.data.corpus import OPTIONAL_SPLITS, SPLITS, CorpusError, load_manifest
from llmshearing.errors import LLMShearingError


class VocabularyMismatchError(LLMShearingError):
    """The model cannot read the token ids of the corpus."""


def checked_domains(data_dir, split: str, domains: Optional[Sequence[str]] = None) -> List[str]:
    """The corpus domains to score; every one must have a ``<domain>/<split>`` folder."""
    if split not in SPLITS + OPTIONAL_SPLITS:
        raise CorpusError(f"unknown split '{split}' (expected one of {SPLITS + OPTIONAL_SPLITS})")
    manifest = load_manifest(data_dir)
    domains = list(domains or manifest["domains"])
    missing = [d for d in domains if not (Path(data_dir) / d / split / "index.json").is_file()]
    if missing == domains:
        raise CorpusError(f"{data_dir} has no {split} splits (expected {data_dir}/<domain>/{split}/index.json "
                          "as written by data_prep/build_sample_corpus.py)")
    if missing:
        raise CorpusError(f"{data_dir}: domain(s) {missing} have no {split} split")
    return domains


def check_vocabulary(model_vocab: int, data_dir, tokenizer=None) -> None:
    """The corpus's token ids must be ids of the model: its vocabulary must cover the corpus's, and
    the tokenizer shipped with the model (when there is one) must be the corpus's size."""
    manifest = load_manifest(data_dir)
    data_vocab = manifest["vocab_size"]  # required by load_manifest
    described = manifest.get("tokenizer", "its tokenizer")
    if model_vocab < data_vocab:
        raise VocabularyMismatchError(
            f"vocabulary mismatch: the corpus was tokenized with {described} ({data_vocab} tokens) but the "
            f"model has {model_vocab}; evaluate on a corpus built with the model's tokenizer")
    if tokenizer is not None and len(tokenizer) != data_vocab:
        raise VocabularyMismatchError(
            f"vocabulary mismatch: the model's tokenizer has {len(tokenizer)} tokens but the corpus was "
            f"tokenized with {described} ({data_vocab} tokens)")
