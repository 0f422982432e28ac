"""Candidate target shapes within a parameter budget, for the architecture search.

Each axis takes a few fractions of the source size (hidden size and MLP width rounded to multiples
of 8 once they are 64 or more); attention takes every valid GQA pair (kept KV groups x query heads
per group). A shape is a candidate when its exact parameter count lies in
[(1 - tolerance) * budget, budget]. When there are more than ``limit`` candidates, an evenly spaced
selection of them, ordered by depth, then width, attention and MLP size, is kept.
"""
from __future__ import annotations

import itertools
import re
from typing import List

from llmshearing.errors import ShapeError
from llmshearing.model.config import LlamaConfig
from llmshearing.shape import TargetShape, config_parameters

FRACTIONS = (1.0, 7 / 8, 3 / 4, 5 / 8, 1 / 2, 3 / 8, 1 / 4)
SUFFIXES = {"": 1, "K": 10 ** 3, "M": 10 ** 6, "B": 10 ** 9}


def parse_budget(text: str) -> int:
    """'70M' -> 70_000_000; also K, B and plain integers."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMB]?)\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ShapeError(f"parameter budget '{text}' is not a number with an optional K/M/B suffix (e.g. 70M)")
    return int(float(match.group(1)) * SUFFIXES[match.group(2).upper()])


def _sizes(full: int) -> List[int]:
    quantum = 8 if full >= 64 else 1
    return sorted({max(quantum, round(full * f / quantum) * quantum) for f in FRACTIONS} | {full}, reverse=True)


def _layer_counts(full: int) -> List[int]:
    return sorted({max(1, round(full * f)) for f in FRACTIONS}, reverse=True)


def all_shapes(source: LlamaConfig) -> List[TargetShape]:
    heads = [(kv * g, kv) for kv in range(1, source.num_key_value_heads + 1) for g in range(1, source.query_groups + 1)]
    shapes = [
        TargetShape(hidden_size=d, num_attention_heads=h, num_key_value_heads=kv, num_hidden_layers=n,
                    intermediate_size=f)
        for d, (h, kv), n, f in itertools.product(_sizes(source.hidden_size), heads,
                                                  _layer_counts(source.num_hidden_layers),
                                                  _sizes(source.intermediate_size))
    ]
    return [shape for shape in shapes if shape.exportable_from(source)]


def shape_parameters(shape: TargetShape, source: LlamaConfig) -> int:
    return config_parameters(shape.config_for(source))


def _spread(shapes: List[TargetShape], limit: int) -> List[TargetShape]:
    if len(shapes) <= limit:
        return shapes
    if limit == 1:
        return [shapes[len(shapes) // 2]]
    return [shapes[round(i * (len(shapes) - 1) / (limit - 1))] for i in range(limit)]


def candidate_shapes(source: LlamaConfig, budget: int, tolerance: float = 0.05, limit: int = 8) -> List[TargetShape]:
    source.require_uniform("the Minitron architecture search")
    if not 0 <= tolerance < 1:
        raise ShapeError(f"budget tolerance must be in [0, 1), got {tolerance}")
    if limit < 1:
        raise ShapeError(f"the number of candidates must be at least 1, got {limit}")
    total = config_parameters(source)
    if budget >= total:
        raise ShapeError(f"parameter budget {budget:,} is not below the source model's {total:,} parameters")
    sized = [(shape_parameters(s, source), s) for s in all_shapes(source)]
    smallest = min(p for p, _ in sized)
    if budget < smallest:
        raise ShapeError(f"parameter budget {budget:,} is smaller than the smallest candidate shape "
                         f"({smallest:,} parameters)")
    low = (1 - tolerance) * budget
    inside = [s for p, s in sized if low <= p <= budget]
    if not inside:
        nearest = max(p for p, _ in sized if p <= budget)
        raise ShapeError(f"no candidate shape has between {int(low):,} and {budget:,} parameters "
                         f"(the largest below the budget has {nearest:,}); raise --budget-tolerance")
    order = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size")
    inside.sort(key=lambda s: tuple(getattr(s, k) for k in order), reverse=True)
    return _spread(inside, limit)
