"""The ``--device`` and ``--dtype`` options of the command-line tools: the GPU when there is one."""
from __future__ import annotations

from typing import Optional


def default_torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser) -> None:
    # no default here: finding the GPU imports torch, which --help and argument errors must not wait for
    parser.add_argument("--device", help="default: cuda when there is a GPU, else cpu")


def chosen_device(device: Optional[str]) -> str:
    """``--device`` as given, else the default."""
    return device or default_torch_device()


def torch_dtype(name: str):
    """A ``--dtype`` name ('float32', 'bfloat16', 'float16') as the torch dtype."""
    import torch

    return getattr(torch, name)
