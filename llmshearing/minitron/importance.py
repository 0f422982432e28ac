"""Importance scores of every prunable unit of a source model, as plain data saved next to the output.

``hidden`` [d_model] (embedding channels), ``heads`` [L, n_heads], ``neurons`` [L, d_ff] and one
[L] vector per depth metric. Rows of layers that were not scored (depth-first estimation scores
width only on the layers it keeps) are NaN, written as null in JSON. ``metadata`` says how the
scores were made, including the first-stage decision of a depth-first / width-first estimation
(a different target can reuse the file only when it makes the same first-stage decision).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict

import torch

from llmshearing.errors import ConfigError
from llmshearing.minitron.choices import DEPTH_METRICS, IMPORTANCE_FILE
from llmshearing.model.config import LlamaConfig

FORMAT = "llmshearing.minitron.importance/1"


@dataclass
class Importance:
    source_config: dict
    hidden: torch.Tensor
    heads: torch.Tensor
    neurons: torch.Tensor
    depth: Dict[str, torch.Tensor] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    @property
    def source(self) -> LlamaConfig:
        return LlamaConfig.from_dict(self.source_config)

    @classmethod
    def random(cls, config: LlamaConfig, seed: int = 0) -> "Importance":
        """Uniform random scores of the right shapes: the baseline that importance must beat."""
        generator = torch.Generator().manual_seed(seed)

        def scores(*shape):
            return torch.rand(*shape, generator=generator)

        layers = config.num_hidden_layers
        return cls(
            config.to_dict(), scores(config.hidden_size), scores(layers, config.num_attention_heads),
            scores(layers, config.intermediate_size), {name: scores(layers) for name in DEPTH_METRICS},
            {"order": "joint", "random_seed": seed},
        )

    def check_source(self, config: LlamaConfig) -> None:
        mine = {k: v for k, v in self.source_config.items() if k != "attn_impl"}
        theirs = {k: v for k, v in config.to_dict().items() if k != "attn_impl"}
        differing = sorted(k for k in mine if mine[k] != theirs.get(k))
        if differing:
            details = ", ".join(f"{k}: file {mine[k]} vs model {theirs.get(k)}" for k in differing)
            raise ConfigError(f"the importance scores were computed for another model ({details})")

    def depth_scores(self, metric: str) -> torch.Tensor:
        if metric not in self.depth:
            raise ConfigError(f"the importance scores have no '{metric}' depth scores "
                              f"(they have {sorted(self.depth)}); recompute them with that depth metric")
        return self.depth[metric]

    # ---- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "source_config": self.source_config,
            "metadata": self.metadata,
            "hidden": _to_list(self.hidden),
            "heads": _to_list(self.heads),
            "neurons": _to_list(self.neurons),
            "depth": {name: _to_list(values) for name, values in self.depth.items()},
        }

    @classmethod
    def from_dict(cls, values: dict) -> "Importance":
        if values.get("format") != FORMAT:
            raise ConfigError(f"not a Minitron importance file (format {values.get('format')!r}, expected {FORMAT!r})")
        return cls(
            values["source_config"], _to_tensor(values["hidden"]), _to_tensor(values["heads"]),
            _to_tensor(values["neurons"]), {k: _to_tensor(v) for k, v in values["depth"].items()},
            values.get("metadata", {}),
        )

    def save(self, path) -> Path:
        """Write JSON to ``path`` (a directory gets importance.json), atomically."""
        path = _file_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "Importance":
        path = _file_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no importance file at {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as exc:  # JSON syntax errors are ValueErrors too
            raise ConfigError(f"{path} is not a valid importance file: {exc!r}") from exc


def _file_path(path) -> Path:
    path = Path(path)
    return path / IMPORTANCE_FILE if path.is_dir() else path


def _to_list(values: torch.Tensor):
    """Nested lists with NaN as None (JSON has no NaN)."""
    values = values.detach().cpu().double()
    flat = [None if v != v else v for v in values.flatten().tolist()]
    if values.dim() <= 1:
        return flat
    width = values.shape[-1]
    return [flat[i:i + width] for i in range(0, len(flat), width)]


def _to_tensor(values) -> torch.Tensor:
    def nan(row):
        return [float("nan") if v is None else v for v in row]

    if values and isinstance(values[0], list):
        return torch.tensor([nan(row) for row in values], dtype=torch.float32)
    return torch.tensor(nan(values), dtype=torch.float32)


