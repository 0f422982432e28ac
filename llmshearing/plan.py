"""PruningPlan: what every pruning method decides, as plain data (JSON), consumed by the one slicer.

Indices refer to the source model. Scales are optional per-unit factors (e.g. Sheared LLaMA's soft
mask values) that the slicer folds into the following weights so the sliced model computes exactly
what the masked model did. Replacement weights are optional source-shaped tensors under HF names
(e.g. LLM Surgeon's updated weights) that the slicer uses instead of the model's own; they are saved
as a safetensors file next to the JSON, which names it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

from llmshearing.errors import ConfigError, ShapeError
from llmshearing.model.config import LlamaConfig
from llmshearing.model.families import export_family
from llmshearing.shape import TargetShape

PLAN_FILE = "pruning_plan.json"
WEIGHTS_KEY = "replacement_weights_file"  # JSON key naming the tensors file (relative to the JSON)
WARNING_KEY = "warning"  # metadata entry: the method's caveat about the plan, for whoever slices with it
PLAN_STATE_KEY = "pruning_plan"  # the entry of an L0 module's extra state that holds its plan (checkpoint_plan.py)


@dataclass
class LayerPlan:
    source_index: int
    kept_kv_heads: List[int]
    kept_heads: List[int]  # query heads, ordered by KV group so new head i belongs to new group i // groups
    kept_neurons: List[int]
    head_scale: Optional[List[float]] = None
    neuron_scale: Optional[List[float]] = None
    attn_scale: float = 1.0  # whole attention block (head_layer_z * layer_z)
    mlp_scale: float = 1.0  # whole MLP block (mlp_z * layer_z)


@dataclass
class PruningPlan:
    source_config: dict
    kept_hidden: List[int]
    layers: List[LayerPlan]
    hidden_scale: Optional[List[float]] = None
    method: str = "unknown"
    metadata: dict = field(default_factory=dict)
    replacement_weights: Optional[Dict[str, torch.Tensor]] = field(default=None, repr=False, compare=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def identity(cls, config: LlamaConfig, method: str = "identity") -> "PruningPlan":
        config.require_uniform("pruning")
        layers = [
            LayerPlan(
                source_index=i,
                kept_kv_heads=list(range(config.num_key_value_heads)),
                kept_heads=list(range(config.num_attention_heads)),
                kept_neurons=list(range(config.intermediate_size)),
            )
            for i in range(config.num_hidden_layers)
        ]
        return cls(config.to_dict(), list(range(config.hidden_size)), layers, method=method)

    @property
    def source(self) -> LlamaConfig:
        return LlamaConfig.from_dict(self.source_config)

    def warning(self) -> Optional[str]:
        """What the method that made the plan wants said wherever it is used (e.g. L0 masks that had not
        reached the target); None when all is well."""
        return self.metadata.get(WARNING_KEY)

    # ---- shape ---------------------------------------------------------------------------
    def layer_shapes(self) -> List[TargetShape]:
        """The shape of each kept layer (hidden size and depth are the same in all of them)."""
        if not self.layers:
            raise ShapeError("the pruning plan keeps no layers")
        return [TargetShape(hidden_size=len(self.kept_hidden), num_attention_heads=len(layer.kept_heads),
                            num_key_value_heads=len(layer.kept_kv_heads), num_hidden_layers=len(self.layers),
                            intermediate_size=len(layer.kept_neurons)) for layer in self.layers]

    def target_shape(self) -> TargetShape:
        """The uniform shape this plan produces; ShapeError if layers differ."""
        shapes = self.layer_shapes()
        for layer, shape in zip(self.layers, shapes):
            if shape != shapes[0]:
                raise ShapeError(
                    f"layer {layer.source_index} keeps a different number of heads/neurons than layer "
                    f"{self.layers[0].source_index}; a plain LLaMA config needs the same sizes in every layer"
                )
        return shapes[0]

    def target_config(self) -> LlamaConfig:
        """The source family's config with the kept sizes: plain when every layer keeps the same sizes, else
        with per-layer sizes; the kept layers keep their attention types (full / sliding window)."""
        shapes = self.layer_shapes()
        return dataclasses.replace(
            shapes[0].config_for(self.source, [layer.source_index for layer in self.layers]),
            intermediate_sizes=[shape.intermediate_size for shape in shapes],
            num_attention_heads_per_layer=[shape.num_attention_heads for shape in shapes],
            num_key_value_heads_per_layer=[shape.num_key_value_heads for shape in shapes],
        )  # equal lists fold back into the scalar fields (LlamaConfig)

    def validate(self) -> None:
        source = self.source
        groups = source.query_groups
        _check_indices("hidden channels", self.kept_hidden, source.hidden_size, self.hidden_scale)
        _check_indices("layers", [l.source_index for l in self.layers], source.num_hidden_layers, None)
        for layer, shape in zip(self.layers, self.layer_shapes()):
            where = f"layer {layer.source_index}"
            _validate_layer_shape(shape, source, where)
            _check_indices(f"{where} KV heads", layer.kept_kv_heads, source.num_key_value_heads, None)
            _check_indices(f"{where} neurons", layer.kept_neurons, source.intermediate_size, layer.neuron_scale, ordered=True)
            _check_indices(f"{where} heads", layer.kept_heads, source.num_attention_heads, layer.head_scale, ordered=False)
            per_group = shape.query_groups
            for new_group, kv in enumerate(layer.kept_kv_heads):
                members = layer.kept_heads[new_group * per_group:(new_group + 1) * per_group]
                if any(h // groups != kv for h in members):
                    raise ShapeError(
                        f"{where}: kept query heads {members} do not all belong to KV head {kv} "
                        f"({groups} query heads per KV head in the source)"
                    )
        try:
            export_family(self.target_config())
        except ConfigError as exc:
            raise ShapeError(f"pruning plan: {exc}") from exc

    # ---- masks for the masked (unsliced) model --------------------------------------------
    def to_masks(self, dtype: torch.dtype = torch.float32) -> dict:
        """Dense masks that make the source model compute what the sliced model computes."""
        source = self.source
        n_layers = source.num_hidden_layers
        masks = {
            "layer_z": torch.zeros(n_layers, dtype=dtype),
            "head_layer_z": torch.zeros(n_layers, dtype=dtype),
            "mlp_z": torch.zeros(n_layers, dtype=dtype),
            "head_z": torch.zeros(n_layers, source.num_attention_heads, dtype=dtype),
            "intermediate_z": torch.zeros(n_layers, source.intermediate_size, dtype=dtype),
            "hidden_z": _dense(self.kept_hidden, self.hidden_scale, source.hidden_size, dtype),
        }
        for layer in self.layers:
            i = layer.source_index
            masks["layer_z"][i] = 1.0
            masks["head_layer_z"][i] = layer.attn_scale
            masks["mlp_z"][i] = layer.mlp_scale
            masks["head_z"][i] = _dense(layer.kept_heads, layer.head_scale, source.num_attention_heads, dtype)
            masks["intermediate_z"][i] = _dense(layer.kept_neurons, layer.neuron_scale, source.intermediate_size, dtype)
        return masks

    # ---- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data for JSON; replacement weights are left out (they go to their own file)."""
        values = dataclasses.asdict(dataclasses.replace(self, replacement_weights=None))
        del values["replacement_weights"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "PruningPlan":
        values = dict(values)
        values.pop(WEIGHTS_KEY, None)
        values["layers"] = [LayerPlan(**layer) for layer in values["layers"]]
        return cls(**values)

    def save(self, path) -> Path:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        values = self.to_dict()
        if self.replacement_weights:
            weights_path = path.with_suffix(".safetensors")
            _save_tensors(self.replacement_weights, weights_path)
            values[WEIGHTS_KEY] = weights_path.name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "PruningPlan":
        path = Path(path)
        if path.is_dir():
            path = path / PLAN_FILE
        if not path.exists():
            raise FileNotFoundError(f"no pruning plan at {path}")
        values = json.loads(path.read_text())
        plan = cls.from_dict(values)
        if values.get(WEIGHTS_KEY):
            from safetensors.torch import load_file

            weights_path = path.parent / values[WEIGHTS_KEY]
            if not weights_path.is_file():
                raise FileNotFoundError(f"the pruning plan {path} names replacement weights {weights_path}, which are missing")
            plan.replacement_weights = load_file(str(weights_path))
        return plan


def _save_tensors(tensors: Dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".safetensors.tmp")
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(tmp))
    tmp.chmod(0o644)  # safetensors writes it private; it sits next to readable model files
    tmp.replace(path)


def _validate_layer_shape(shape: TargetShape, source: LlamaConfig, where: str) -> None:
    try:
        shape.validate_against(source, whole_model=False)
    except ShapeError as exc:
        raise ShapeError(f"{where}: {exc}") from exc


def _dense(indices, scale, size, dtype) -> torch.Tensor:
    out = torch.zeros(size, dtype=dtype)
    values = torch.ones(len(indices), dtype=dtype) if scale is None else torch.tensor(scale, dtype=dtype)
    out[torch.tensor(indices, dtype=torch.long)] = values
    return out


def _check_indices(what, indices, limit, scale, ordered=True):
    if len(set(indices)) != len(indices):
        raise ShapeError(f"pruning plan repeats {what}: {indices}")
    if any(i < 0 or i >= limit for i in indices):
        raise ShapeError(f"pruning plan {what} out of range [0, {limit}): {indices}")
    if ordered and list(indices) != sorted(indices):
        raise ShapeError(f"pruning plan {what} must be in increasing order")
    if scale is not None and len(scale) != len(indices):
        raise ShapeError(f"pruning plan {what}: {len(scale)} scales for {len(indices)} units")
