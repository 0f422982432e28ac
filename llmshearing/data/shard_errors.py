"""Name the shard file when a sample cannot be read from it (instead of streaming's bare IndexError)."""
from __future__ import annotations

from pathlib import Path

from streaming import StreamingDataset

from llmshearing.data.corpus import CorpusError


def unreadable_sample(reader: StreamingDataset, sample_id: int, exc: Exception) -> CorpusError:
    shard_id, index = reader.spanner[sample_id]
    shard = reader.shards[shard_id]
    path = Path(shard.dirname, shard.split, shard.raw_data.basename)
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return CorpusError(f"shard file {path} is corrupt: its sample {index} cannot be read ({reason})")
