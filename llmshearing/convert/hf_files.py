"""Read a Hugging Face model directory's weights one file (shard) at a time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterator, List

import torch

from llmshearing.convert.messages import first_line
from llmshearing.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS = "model.safetensors"
BIN_INDEX = "pytorch_model.bin.index.json"
BIN = "pytorch_model.bin"


def weight_files(model_dir: Path) -> List[Path]:
    """The weight files of ``model_dir``, safetensors preferred, sharded or not."""
    for index_name in (SAFETENSORS_INDEX, BIN_INDEX):
        index = model_dir / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index} is not a valid weight index: {exc}") from exc
            missing = [name for name in shards if not (model_dir / name).is_file()]
            if missing:
                raise CheckpointError(f"{model_dir}: weight shards listed in {index_name} are missing: {missing}")
            return [model_dir / name for name in shards]
    for name in (SAFETENSORS, BIN):
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise CheckpointError(f"{model_dir} has a config.json but no {SAFETENSORS} or {BIN} weights")


def read_weight_file(path: Path) -> Dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle raise many types for a damaged file
        raise CheckpointError(f"{path} cannot be read (corrupt or truncated?): {first_line(exc)}") from exc


def iter_weight_shards(model_dir: Path) -> Iterator[Dict[str, torch.Tensor]]:
    for path in weight_files(model_dir):
        yield read_weight_file(path)

