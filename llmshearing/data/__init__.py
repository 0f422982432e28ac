"""Tokenized multi-domain corpora: building them (``corpus_builder``), validating them
(``corpus``) and loading them as batches (``loaders``)."""

from llmshearing.data.corpus import (CorpusError, domain_document_ids, domain_split_dir,
                                     load_manifest)
from llmshearing.data.loaders import (build_eval_dataloaders, build_train_dataloader,
                                      normalize_proportions)

__all__ = [
    "CorpusError",
    "build_eval_dataloaders",
    "build_train_dataloader",
    "domain_document_ids",
    "domain_split_dir",
    "load_manifest",
    "normalize_proportions",
]
