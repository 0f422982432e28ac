"""One-line renderings of third-party exceptions for CheckpointError messages."""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """The whole message with its line breaks and indentation collapsed."""
    return " ".join(str(exc).split()) or type(exc).__name__
