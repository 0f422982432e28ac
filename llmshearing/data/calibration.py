"""Calibration batches for one-shot pruning methods (Minitron importance, LLM Surgeon curvature)."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import torch

from llmshearing.data.corpus import CorpusError, domain_split_dir, load_manifest, check_domains


def calibration_batches(
    data_dir,
    num_samples: int,
    seq_len: Optional[int] = None,
    batch_size: int = 8,
    seed: int = 0,
    domains: Optional[Sequence[str]] = None,
    split: str = "train",
) -> List[torch.Tensor]:
    """``num_samples`` sequences drawn evenly from the domains (seeded), as LongTensor batches."""
    from streaming import LocalDataset

    from llmshearing.data.loaders import to_model_input

    if num_samples < 1:
        raise CorpusError(f"the calibration set is empty: num_samples={num_samples}")
    manifest = load_manifest(data_dir)
    domains = list(domains or manifest["domains"])
    check_domains(manifest, domains, data_dir)
    seq_len = seq_len or int(manifest["seq_len"])
    if seq_len > int(manifest["seq_len"]):
        raise CorpusError(f"calibration seq_len {seq_len} is longer than the corpus's {manifest['seq_len']}")
    rng = np.random.default_rng(seed)
    per_domain = [num_samples // len(domains) + (i < num_samples % len(domains)) for i in range(len(domains))]
    rows = []
    for domain, count in zip(domains, per_domain):
        if count == 0:
            continue
        samples = LocalDataset(local=str(domain_split_dir(data_dir, domain, split)))
        if len(samples) == 0:
            raise CorpusError(f"domain {domain} has no {split} samples in {data_dir}")
        picks = rng.permutation(len(samples))[:count]
        if len(picks) < count:  # tiny domain: repeat rather than silently shrink the set
            picks = np.resize(picks, count)
        rows.extend(to_model_input(samples[int(i)], seq_len, manifest.get("vocab_size"))["input_ids"] for i in picks)
    order = rng.permutation(len(rows))
    stacked = torch.stack([rows[i] for i in order])
    return list(stacked.split(batch_size))
