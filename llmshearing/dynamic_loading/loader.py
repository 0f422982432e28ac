"""Build the dynamic-mixture train DataLoader over a corpus directory (one stream per domain)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from composer.utils import dist
from streaming import StreamingDataset
from torch.utils.data import DataLoader

from llmshearing.dynamic_loading.dataset import DynamicMixtureDataset
from llmshearing.data.loaders import checked_manifest, normalize_proportions
from llmshearing.dynamic_loading.mixture_sampler import MixtureSampler
from llmshearing.data.remote import train_stream
from llmshearing.dynamic_loading.weight_table import WeightTable


def build_dynamic_train_dataloader(data_dir: str | Path, domains: Sequence[str],
                                   proportions: Sequence[float] | None, global_batch_size: int,
                                   seq_len: int, seed: int, *, update_interval: Optional[int],
                                   max_steps: int, num_workers: int = 0,
                                   max_repeats: Optional[int] = None,
                                   remote: Optional[str] = None, split: str = "train") -> DataLoader:
    """Loader of this rank's share of each global batch, mixed by weights that may change every
    ``update_interval`` steps (``None``: static) up to ``max_steps``; train shards are read from
    ``data_dir`` or, with ``remote``, streamed from there into ``data_dir``."""
    manifest = checked_manifest(data_dir, domains, seq_len)
    weights = normalize_proportions(domains, proportions)
    streams = [train_stream(data_dir, domain, remote, split) for domain in domains]
    reader = StreamingDataset(streams=streams, shuffle=False)
    sampler = MixtureSampler(seed, reader.samples_per_stream, global_batch_size, max_repeats)
    table = WeightTable(weights, update_interval, max_steps)
    dataset = DynamicMixtureDataset(reader, domains, sampler, table, seq_len, manifest.get("vocab_size"),
                                    rank=dist.get_global_rank(), world_size=dist.get_world_size())
    return DataLoader(dataset, batch_size=dataset.local_batch_size, num_workers=num_workers)
