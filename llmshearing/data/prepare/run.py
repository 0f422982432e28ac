"""Preparing a corpus end to end: plan the domains, prepare this process's units, merge.

``prepare_corpus`` with one shard is the whole job; with ``num_shards`` > 1 it prepares one
piece and ``merge_corpus`` (after every piece) makes the corpus. Both write the same samples.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from llmshearing.data.prepare.amounts import SHORT_DOMAIN_POLICIES, samples_for
from llmshearing.data.prepare.eval_pool import SCAN_TOKENS, scan_eval_pool
from llmshearing.data.prepare.merge import merge_domain
from llmshearing.data.prepare.pieces import DomainPlan, Progress, prepare_units
from llmshearing.data.prepare.state import (PrepareError, PreparePaths, claim_output, load_options,
                                           refuse_unusable_output)
from llmshearing.data.prepare.tokenizing import DocumentEncoder, ParallelEncoder
from llmshearing.data.prepare.unit_writer import token_columns, token_dtype, write_json_atomically
from llmshearing.data.prepare.units import MAX_EVAL_FRACTION, Unit, processing_order, split_draw

MANIFEST_FORMAT_VERSION = 2
Log = Callable[[str], None]


@dataclass
class DomainInput:
    """A domain's documents, as units, with what the manifest says of where they came from."""

    name: str
    units: list[Unit]
    description: str = ""
    inputs: list = field(default_factory=list)
    # stands in for a train budget of "all" when sizing the eval pool; a file domain up to
    # eval_pool.SCAN_TOKENS is read first to size its pool from its documents (0: unknown, not read)
    estimated_tokens: int = 0


@dataclass(frozen=True)
class Budgets:
    """Tokens per domain and split; train ``None`` = all the domain has; cpt absent = no cpt split."""

    eval_tokens: dict[str, int]
    train_tokens: dict[str, int | None]
    cpt_tokens: dict[str, int] | None = None

    def of(self, domain: str) -> dict[str, int | None]:
        tokens = {"train": self.train_tokens[domain], "eval": self.eval_tokens[domain]}
        if self.cpt_tokens:
            tokens["cpt"] = self.cpt_tokens[domain]
        return tokens


@dataclass(frozen=True)
class PrepareSettings:
    seq_len: int
    seed: int = 1234
    short_domains: str = "error"
    skip_bad_records: bool = False
    workers: int = 1
    num_shards: int = 1
    shard_index: int = 0
    overwrite: bool = False
    eval_pool_fraction: float | None = None  # None: sized from the budgets

    def validate(self) -> None:
        if self.seq_len < 2:
            raise PrepareError(f"--seq-len must be at least 2, got {self.seq_len}")
        if self.short_domains not in SHORT_DOMAIN_POLICIES:
            raise PrepareError(f"--short-domains must be one of {SHORT_DOMAIN_POLICIES}, got {self.short_domains!r}")
        if self.workers < 1:
            raise PrepareError(f"--workers must be at least 1, got {self.workers}")
        if self.eval_pool_fraction is not None and not 0 < self.eval_pool_fraction < 1:
            raise PrepareError(f"--eval-pool-fraction must be in (0, 1), got {self.eval_pool_fraction}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise PrepareError(f"--shard-index must be in [0, {self.num_shards}) for --num-shards {self.num_shards}, "
                               f"got {self.shard_index}")


def _plan(domain: DomainInput, budgets: Budgets, settings: PrepareSettings, encoder: DocumentEncoder,
          log: Log) -> DomainPlan:
    tokens = budgets.of(domain.name)
    rows = {split: samples_for(amount, settings.seq_len) for split, amount in tokens.items()}
    draw = split_draw(tokens["eval"], tokens["train"], tokens.get("cpt"), domain.estimated_tokens,
                      settings.eval_pool_fraction)
    if settings.eval_pool_fraction is None and 0 < domain.estimated_tokens <= SCAN_TOKENS:
        fraction = _scanned_eval_fraction(domain, draw.eval_fraction, rows["eval"], settings, encoder, log)
        if fraction > draw.eval_fraction:
            draw = split_draw(tokens["eval"], tokens["train"], tokens.get("cpt"), domain.estimated_tokens, fraction)
    return DomainPlan(domain.name, processing_order(domain.units, settings.seed, domain.name), draw, rows,
                      settings.seed)


def _scanned_eval_fraction(domain: DomainInput, default: float, eval_rows: int, settings: PrepareSettings,
                           encoder: DocumentEncoder, log: Log) -> float:
    """The eval pool a small domain's documents need (``eval_pool.py``): the default when it fills eval."""
    scan = scan_eval_pool(domain.units, settings.seed, domain.name, encoder, settings.seq_len, eval_rows,
                          settings.skip_bad_records)
    if scan.documents == 0:
        return default  # an empty domain: the merge says so
    if scan.fraction is None:
        message = (f"domain '{domain.name}' has too little text for {eval_rows * settings.seq_len:,} eval tokens: "
                   f"the half of its {scan.documents} documents an eval pool may take holds "
                   f"{scan.rows * settings.seq_len:,} ({scan.rows} samples)")
        if settings.short_domains == "error":
            raise PrepareError(f"{message}; give it more text, lower --eval-tokens, or pass --short-domains cap "
                               "to use what it has")
        return MAX_EVAL_FRACTION
    if scan.fraction > default:
        log(f"[{domain.name}] eval pool: {scan.fraction:.3g} of the documents (the {default:.3g} sized from the "
            f"budgets holds too few eval tokens: its {scan.documents} documents are few or uneven)")
    return scan.fraction


def _options(domains: Sequence[DomainInput], plans: Sequence[DomainPlan], encoder: DocumentEncoder,
             tokenizer_description: str, settings: PrepareSettings, reading: dict, budgets: Budgets) -> dict:
    """Everything that decides which samples the corpus holds: equal for every piece and resume."""
    return {
        "tokenizer": tokenizer_description, "vocab_size": len(encoder.tokenizer),
        "bos_token_ids": encoder.prefix, "separator_id": encoder.separator_id, "separator": encoder.separator,
        "seq_len": settings.seq_len, "seed": settings.seed, "short_domains": settings.short_domains,
        "skip_bad_records": settings.skip_bad_records, "num_shards": settings.num_shards, "reading": reading,
        "domains": {
            domain.name: {"description": domain.description, "inputs": domain.inputs,
                          "units": [unit.fingerprint() for unit in plan.units],  # in the corpus's order
                          "eval_pool_fraction": plan.draw.eval_fraction, "cpt_fraction": plan.draw.cpt_fraction,
                          "budget_samples": plan.budget_rows, "budget_tokens": budgets.of(domain.name)}
            for domain, plan in zip(domains, plans)},
    }


def prepare_corpus(out_dir: str | Path, domains: Sequence[DomainInput], tokenizer, tokenizer_description: str,
                   budgets: Budgets, settings: PrepareSettings, reading: dict | None = None,
                   log: Log = print, progress: bool = False) -> dict | None:
    """Prepare the corpus (one shard: returns the manifest) or one piece of it (returns None)."""
    settings.validate()
    if not domains:
        raise PrepareError("no domain given: name them with --domain NAME=PATH or --root DIR")
    paths = PreparePaths(Path(out_dir))
    refuse_unusable_output(paths, settings.overwrite)  # before the inputs are read to plan
    encoder = DocumentEncoder(tokenizer, token_dtype(len(tokenizer)))
    plans = [_plan(domain, budgets, settings, encoder, log) for domain in domains]
    options = _options(domains, plans, encoder, tokenizer_description, settings, reading or {}, budgets)
    claim_output(paths, options, settings.overwrite, log)
    single = settings.num_shards == 1
    started = time.monotonic()
    with ParallelEncoder(encoder, settings.workers) as parallel:
        for plan in plans:
            mine = plan.units[settings.shard_index::settings.num_shards]
            prepare_units(paths, plan, mine, parallel, settings.seq_len, encoder.dtype, settings.skip_bad_records,
                          stop_at_budget=single, progress=Progress(progress), log=log)
    write_json_atomically(paths.piece_marker(settings.shard_index, settings.num_shards),
                          {"seconds": round(time.monotonic() - started, 1)})
    if not single:
        log(f"piece {settings.shard_index} of {settings.num_shards} prepared in {out_dir}; when every piece is "
            f"done: python -m llmshearing.data.prepare merge {out_dir}")
        return None
    return merge_corpus(out_dir, log=log)


def merge_corpus(out_dir: str | Path, log: Log = print) -> dict:
    """Join the prepared units into the corpus and write ``manifest.json`` (last)."""
    paths = PreparePaths(Path(out_dir))
    options = load_options(paths)
    count = options["num_shards"]
    missing = [index for index in range(count) if not paths.piece_marker(index, count).is_file()]
    if missing:
        raise PrepareError(f"pieces {missing} of {count} have not finished in {out_dir}; run them "
                           f"(--num-shards {count} --shard-index I) before merging")
    paths.manifest.unlink(missing_ok=True)
    per_domain = {}
    for name, domain in options["domains"].items():
        unit_ids = _prepared_unit_ids(paths, name, domain, must_be_complete=count > 1)
        stats = merge_domain(paths, name, unit_ids, domain["budget_samples"], options["seq_len"],
                             options["short_domains"], domain["eval_pool_fraction"], log)
        per_domain[name] = {"description": domain["description"], "inputs": domain["inputs"],
                            "units": len(unit_ids), **stats}
    manifest = _manifest(options, per_domain)
    write_json_atomically(paths.manifest, manifest)
    return manifest


def _prepared_unit_ids(paths: PreparePaths, name: str, domain: dict, must_be_complete: bool) -> list[str]:
    """The recorded units in the corpus's order: all of them after pieces, a leading run after one process."""
    order = [unit_id for unit_id, _, _ in domain["units"]]
    recorded = [paths.unit_record(name, unit_id).is_file() for unit_id in order]
    if must_be_complete and not all(recorded):
        absent = [unit_id for unit_id, done in zip(order, recorded) if not done]
        raise PrepareError(f"domain '{name}': units {absent[:5]} were not prepared; re-run their pieces")
    return order[:recorded.index(False)] if False in recorded else order


def _manifest(options: dict, per_domain: dict) -> dict:
    dtype = token_dtype(options["vocab_size"])
    domains = options["domains"]
    splits = list(next(iter(domains.values()))["budget_tokens"])
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "domains": list(per_domain),
        "seq_len": options["seq_len"],
        "vocab_size": options["vocab_size"],
        "tokenizer": options["tokenizer"],
        "token_dtype": np.dtype(dtype).name,
        "columns": token_columns(dtype),
        "bos_token_id": options["bos_token_ids"][-1] if options["bos_token_ids"] else None,
        "eos_token_id": options["separator_id"],
        "eos_token": options["separator"],
        "seed": options["seed"],
        "splits": splits,
        "budgets": {f"{split}_tokens": {name: domain["budget_tokens"][split] for name, domain in domains.items()}
                    for split in splits},
        "eval_pool_fraction": {name: domain["eval_pool_fraction"] for name, domain in domains.items()},
        "short_domains": options["short_domains"],
        "created_by": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "per_domain": per_domain,
    }
