"""The sample corpus: registry-package texts (``sources.py``) prepared by the one corpus code path.

Each domain's package texts are one unit of ``llmshearing.data.prepare``: tokenized, split into
train / eval by document, cut into ``seq_len`` samples and written as MDS with the manifest
last, exactly as a user's own files are. The per-domain budgets are caps: a package with less
text gives what it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from llmshearing.data.fetch import DEFAULT_CACHE_DIR, fetch_package_tree
from llmshearing.data.prepare import Budgets, DomainInput, PrepareError, PrepareSettings, prepare_corpus
from llmshearing.data.prepare.units import Unit
from llmshearing.data.sources import DOMAIN_SOURCES, DomainSource

Log = Callable[[str], None]


class CorpusBuildError(PrepareError):
    """The sample corpus could not be built (bad arguments, or a domain has too little text)."""


@dataclass(frozen=True)
class BuildOptions:
    seq_len: int = 512
    max_train_tokens: int = 1_500_000
    max_eval_tokens: int = 60_000
    seed: int = 1234

    def validate(self) -> None:
        if self.seq_len < 2:
            raise CorpusBuildError(f"seq_len must be at least 2, got {self.seq_len}")
        for name in ("max_train_tokens", "max_eval_tokens"):
            if getattr(self, name) < self.seq_len:
                raise CorpusBuildError(f"{name} ({getattr(self, name)}) must be at least "
                                       f"seq_len ({self.seq_len})")


def _package_domain(source: DomainSource, cache_dir: Path, log: Log) -> DomainInput:
    trees = []
    for package in source.packages:
        log(f"[{source.name}] fetching {package.label}")
        trees.append(fetch_package_tree(package, cache_dir))
    unit = Unit("u00000", tuple(package.label for package in source.packages), 0,
                read=lambda bad_records: source.read_documents(trees))
    return DomainInput(source.name, [unit], description=source.description,
                       inputs=[package.as_manifest_entry() for package in source.packages])


def build_corpus(out_dir: Path, options: BuildOptions, tokenizer, tokenizer_description: str,
                 cache_dir: Path = DEFAULT_CACHE_DIR,
                 sources: Sequence[DomainSource] = DOMAIN_SOURCES, log: Log = print, workers: int = 1) -> dict:
    """Build every domain of ``sources`` into ``out_dir`` (replacing a corpus there); returns the manifest."""
    options.validate()
    domains = [_package_domain(source, Path(cache_dir), log) for source in sources]
    names = [domain.name for domain in domains]
    budgets = Budgets(eval_tokens={name: options.max_eval_tokens for name in names},
                      train_tokens={name: options.max_train_tokens for name in names})
    settings = PrepareSettings(seq_len=options.seq_len, seed=options.seed, short_domains="cap",
                               workers=workers, overwrite=True)
    try:
        return prepare_corpus(out_dir, domains, tokenizer, tokenizer_description, budgets, settings, log=log)
    except PrepareError as error:
        raise CorpusBuildError(str(error)) from error
