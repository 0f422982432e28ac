"""The ``--device`` option of every command-line tool: the GPU when there is one."""
from __future__ import annotations


def default_torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default=default_torch_device(), help="default: cuda when there is a GPU, else cpu")
