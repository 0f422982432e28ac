"""The default ``--device`` of every command-line tool: the GPU when there is one."""
from __future__ import annotations


def default_torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
