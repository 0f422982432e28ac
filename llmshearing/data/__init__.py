"""Tokenized multi-domain corpora: building them (``corpus_builder``), validating them
(``corpus``) and loading them as batches (``loaders``)."""
from llmshearing.lazy_exports import lazy_exports

__all__ = [
    "CorpusError",
    "build_eval_dataloaders",
    "build_train_dataloader",
    "domain_document_ids",
    "domain_split_dir",
    "load_manifest",
    "normalize_proportions",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "CorpusError": "corpus",
    "domain_document_ids": "corpus",
    "domain_split_dir": "corpus",
    "load_manifest": "corpus",
    "build_eval_dataloaders": "loaders",
    "build_train_dataloader": "loaders",
    "normalize_proportions": "loaders",
})
