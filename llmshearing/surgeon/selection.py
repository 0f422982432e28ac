"""One global threshold over many cost tensors: the k smallest entries over all of them, exactly.

The threshold is found by bisection on the float32 bit pattern (monotone for non-negative floats),
31 counting passes and no concatenated copy, so per-weight costs of a large model can stay in
their per-matrix tensors. Ties at the threshold are broken by position, so exactly k are chosen.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

_INF_BITS = 0x7F800000  # float32 +inf as int32
_NEVER = 0x7FFFFFFF  # above every key the bisection looks at: marks entries already chosen


def _keys(cost: torch.Tensor, forced: Optional[torch.Tensor]) -> torch.Tensor:
    keys = torch.nan_to_num(cost.float(), nan=float("inf")).clamp(min=0.0).view(torch.int32)
    return keys if forced is None else keys.masked_fill(forced, _NEVER)


def select_smallest(costs: Sequence[torch.Tensor], k: int,
                    forced: Optional[Sequence[Optional[torch.Tensor]]] = None) -> List[torch.Tensor]:
    """Boolean masks (one per cost tensor) choosing the ``k`` smallest costs over all tensors.

    Entries marked in ``forced`` are always chosen and count towards ``k``; +inf/NaN costs are
    chosen only when nothing else is left.
    """
    forced = list(forced) if forced is not None else [None] * len(costs)
    chosen = [f.clone() if f is not None else torch.zeros(c.shape, dtype=torch.bool) for c, f in zip(costs, forced)]
    remaining = k - sum(int(c.sum()) for c in chosen)
    if remaining <= 0:
        return chosen
    keys = [_keys(c, f) for c, f in zip(costs, forced)]

    def at_most(threshold: int) -> int:
        return sum(int((key <= threshold).sum()) for key in keys)

    low, high = -1, _INF_BITS  # invariant: at_most(low) < remaining <= at_most(high) (or too few entries)
    while high - low > 1:
        mid = (low + high) // 2
        if at_most(mid) >= remaining:
            high = mid
        else:
            low = mid
    for key, mask in zip(keys, chosen):
        mask |= key < high
    missing = k - sum(int(m.sum()) for m in chosen)
    for key, mask in zip(keys, chosen):  # ties at the threshold, in order
        if missing <= 0:
            break
        ties = (key == high).reshape(-1).nonzero().squeeze(1)[:missing]
        mask.view(-1)[ties] = True
        missing -= ties.numel()
    return chosen
