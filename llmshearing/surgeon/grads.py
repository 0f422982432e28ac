"""Which parameters need gradients, for the span of a ``with`` block."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch


@contextlib.contextmanager
def trainable_only(model: torch.nn.Module, params: Iterable[torch.nn.Parameter] = ()):
    """Only ``params`` need gradients inside the block (none by default); flags restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
