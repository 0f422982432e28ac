"""Test helper: draw batches from the dynamic train loader as one rank of a (simulated) job.

    python tests/dynamic_loader_probe.py OUT.json CORPUS GLOBAL_BATCH NUM_BATCHES NUM_WORKERS

Rank and world size come from the environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), exactly as under ``composer -n``. Writes, per batch, the list of
(domain, sha1 of the sample's tokens).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import sys

from llmshearing.dynamic_loading.loader import build_dynamic_train_dataloader
from llmshearing.data.corpus import load_manifest


def draw(corpus: str, global_batch: int, num_batches: int, num_workers: int):
    domains = load_manifest(corpus)["domains"]
    loader = build_dynamic_train_dataloader(corpus, domains, None, global_batch, 32, seed=5,
                                            update_interval=None, max_steps=num_batches,
                                            num_workers=num_workers)
    return [[[int(domain), hashlib.sha1(row.numpy().tobytes()).hexdigest()]
             for domain, row in zip(batch["domain"], batch["input_ids"])]
            for batch in itertools.islice(loader, num_batches)]


if __name__ == "__main__":
    out, corpus, global_batch, num_batches, num_workers = sys.argv[1:]
    batches = draw(corpus, int(global_batch), int(num_batches), int(num_workers))
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(batches, handle)
