"""Density per projection / layer / model of a surgeon run, and the JSON report written next to the output."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List

from llmshearing.model.config import PER_LAYER_FIELDS, LlamaConfig
from llmshearing.surgeon.units import projection_sizes

REPORT_FILE = "surgeon_report.json"


def layer_densities(pruner, config: LlamaConfig) -> List[Dict]:
    sizes = projection_sizes(config)
    layers = []
    for index in range(config.num_hidden_layers):
        per_projection = pruner.projection_density(index)
        kept = sum(per_projection[name] * size for name, size in sizes.items())
        layers.append({"layer": index, "density": kept / sum(sizes.values()),
                       "projections": {name.split(".")[-1]: value for name, value in per_projection.items()}})
    return layers


def achieved_density(pruner, config: LlamaConfig) -> float:
    """Kept fraction of all layers' projection weights (every layer has the same number of them)."""
    layers = layer_densities(pruner, config)
    return sum(layer["density"] for layer in layers) / len(layers)


def result_shape(config: LlamaConfig) -> Dict:
    """The exported model's sizes; per-layer lists when the layers differ (scalars: the largest)."""
    keys = ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers", "intermediate_size",
            *PER_LAYER_FIELDS)
    return {key: getattr(config, key) for key in keys if getattr(config, key) is not None}


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux/macOS; 0 where unknown)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        return 0


def write_report(folder, *, settings, run, source_config: LlamaConfig, result_config: LlamaConfig,
                 source_params: int, result_params: int, nonzero_params: int, seconds: float, **extra) -> Path:
    report = {
        "method": "llm-surgeon",
        "settings": dataclasses.asdict(settings),
        "target_density": settings.density,
        "density": achieved_density(run.pruner, source_config),
        "parameters": {"source": source_params, "result": result_params, "nonzero": nonzero_params},
        "result_shape": result_shape(result_config),
        "factor_memory": run.factor_memory,
        "memory": {"estimate": run.memory_estimate, "estimate_bytes": run.memory_estimate_bytes,
                   "peak_rss_bytes": peak_rss_bytes()},
        "shots": [dataclasses.asdict(shot) for shot in run.shots],
        "seconds": seconds,
        **extra,
        "layers": layer_densities(run.pruner, source_config),
    }
    path = Path(folder) / REPORT_FILE
    path.write_text(json.dumps(report, indent=1))
    return path
