"""Command-line entry of train.py: one-line errors for bad input, exit codes a script can test."""
from __future__ import annotations

import sys
from typing import Sequence

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3


def one_line(exc: BaseException) -> str:
    """The message on one line. An exception re-raised from a DataLoader worker carries the
    worker's traceback ("Caught CorpusError in DataLoader worker process 0. ..."): its last
    line holds the original message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return " ".join(lines)


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: train.py CONFIG.yaml [key=value ...]   (omegaconf dot-list overrides)")
        return 0 if argv else EXIT_BAD_INPUT
    from llmshearing.composer.nan_guard import NonFiniteLossError
    from llmshearing.config import load_config
    from llmshearing.errors import LLMShearingError
    from llmshearing.training import build_trainer

    try:
        cfg = load_config(argv[0], argv[1:])
        trainer = build_trainer(cfg)
        trainer.fit()
    except (LLMShearingError, FileNotFoundError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_NONFINITE
    if cfg.save_folder:
        from composer.utils import format_name_with_dist

        print(f"run finished; checkpoints in {format_name_with_dist(cfg.save_folder, trainer.state.run_name)}")
    return 0
