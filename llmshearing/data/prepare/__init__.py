"""Preparing a tokenized per-domain corpus from any text: ``python -m llmshearing.data.prepare``.

One code path makes every corpus (the sample corpus too): units of documents are tokenized in
parallel, split into train / eval (/ cpt) by document, cut into samples, written as MDS, and
merged under the budgets into the layout ``llmshearing.data.corpus`` reads.
"""

from llmshearing.lazy_exports import lazy_exports

__all__ = ["Budgets", "DomainInput", "PrepareError", "PrepareSettings", "merge_corpus", "prepare_corpus"]
__getattr__, __dir__ = lazy_exports(__name__, {
    **{name: "run" for name in ("Budgets", "DomainInput", "PrepareSettings", "merge_corpus", "prepare_corpus")},
    "PrepareError": "state",
})
