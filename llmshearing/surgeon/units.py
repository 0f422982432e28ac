"""Structures that structured pruning removes, as blocks of rows/columns of a layer's projections.

- neuron j: row j of gate_proj and up_proj, column j of down_proj;
- query head h (GQA, attention unit "head"): the head_dim rows of h in q_proj, its columns in o_proj;
- KV group g (attention unit "kv-group", and every head of an MHA model): rows of g in k_proj and
  v_proj, the rows/columns of all its query heads in q_proj/o_proj (contiguous: group g serves query
  heads g·n .. g·n+n-1).

A unit's cost is the sum of its pieces' costs: with a Fisher that is block-diagonal over matrices
this is the Kronecker model's loss increase for removing every piece (each with its optimal update).

Only the output-side piece (down_proj / o_proj columns) is removed with the correlated update; the
input-side rows are just zeroed (and sliced away). Once the output-side columns are zero the unit no
longer reaches the residual stream, so its rows change nothing, and a row update would move the
other units to make up for a change that never happens. Measured on SmolLM2-135M (structured 0.9,
2k calibration tokens): calibration loss 4.55 with the row updates, 3.19 without (dense 3.18).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch

from llmshearing.model.config import LlamaConfig
from llmshearing.surgeon.choices import HEAD
from llmshearing.surgeon.curvature import IdentityCurvature, block_indices

ROWS, COLUMNS = "rows", "columns"
_ZEROING = IdentityCurvature()


@dataclass(frozen=True)
class Piece:
    projection: str
    axis: str  # ROWS or COLUMNS of the weight (out × in)
    size: int  # rows/columns per unit
    updated: bool = False  # removed with the correlated update (else zeroed)


@dataclass(frozen=True)
class UnitKind:
    name: str
    pieces: Tuple[Piece, ...]
    count: int  # units per layer in the source model
    params: int  # weights per unit
    group_size: int  # units that must keep equal counts (query heads of one KV group); else count

    def costs(self, layer: torch.nn.Module, curvatures: Dict) -> torch.Tensor:
        """Cost of removing each unit of ``layer`` alone, shape [count]."""
        total = torch.zeros(self.count)
        for piece in self.pieces:
            weight = layer.get_submodule(piece.projection).weight
            curvature = curvatures[piece.projection]
            cost = curvature.row_costs(weight, piece.size) if piece.axis == ROWS else curvature.column_costs(weight, piece.size)
            total += cost.detach().float().cpu()
        return total

    @torch.no_grad()
    def remove(self, layer: torch.nn.Module, curvatures: Dict, units: Sequence[int]) -> None:
        """Remove ``units`` from ``layer`` in place, each piece with its correlated update."""
        if not units:
            return
        for piece in self.pieces:
            weight = layer.get_submodule(piece.projection).weight
            indices = block_indices(units, piece.size, weight.device)
            curvature = curvatures[piece.projection] if piece.updated else _ZEROING
            if piece.axis == ROWS:
                curvature.remove_rows(weight, indices)
            else:
                curvature.remove_columns(weight, indices)


def neuron_kind(config: LlamaConfig) -> UnitKind:
    pieces = (Piece("mlp.gate_proj", ROWS, 1), Piece("mlp.up_proj", ROWS, 1), Piece("mlp.down_proj", COLUMNS, 1, True))
    return UnitKind("neuron", pieces, config.intermediate_size, 3 * config.hidden_size, config.intermediate_size)


def attention_kind(config: LlamaConfig, unit: str = HEAD) -> UnitKind:
    d, head_dim, groups = config.hidden_size, config.head_dim, config.query_groups
    if unit == HEAD and groups > 1:
        pieces = (Piece("self_attn.q_proj", ROWS, head_dim), Piece("self_attn.o_proj", COLUMNS, head_dim, True))
        return UnitKind("head", pieces, config.num_attention_heads, 2 * head_dim * d, groups)
    pieces = (Piece("self_attn.q_proj", ROWS, groups * head_dim), Piece("self_attn.k_proj", ROWS, head_dim),
              Piece("self_attn.v_proj", ROWS, head_dim), Piece("self_attn.o_proj", COLUMNS, groups * head_dim, True))
    n_kv = config.num_key_value_heads
    return UnitKind("kv_group", pieces, n_kv, (2 * groups + 2) * head_dim * d, n_kv)


def projection_sizes(config: LlamaConfig) -> Dict[str, int]:
    """Weights per projection of one layer (the prunable weights)."""
    d, f = config.hidden_size, config.intermediate_size
    q = config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    return {"self_attn.q_proj": q * d, "self_attn.k_proj": kv * d, "self_attn.v_proj": kv * d,
            "self_attn.o_proj": d * q, "mlp.gate_proj": f * d, "mlp.up_proj": f * d, "mlp.down_proj": d * f}
