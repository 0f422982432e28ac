"""The package's log records (``llmshearing.*``) on stderr, one short line each, for every command.

Without a handler Python drops INFO records, so a long step logged with ``logging`` (Minitron's
scoring, its search) would show nothing until the command's last line.
"""
from __future__ import annotations

import logging
import sys

PACKAGE_LOGGER = "llmshearing"


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (a test's capture, a redirection),
    not as it was when the handler was made."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class ConciseFormatter(logging.Formatter):
    """``12:03:04 message``; warnings and errors say so: ``12:03:04 warning: message``."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING:
            record.message = f"{record.levelname.lower()}: {record.message}"
        return super().formatMessage(record)


def show_progress_logs(level: int = logging.INFO) -> None:
    """Idempotent. The records stay out of the root logger, whose handlers (Composer's, once a
    Trainer is made) would print each line a second time."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(handler, CurrentStderrHandler) for handler in logger.handlers):
        handler = CurrentStderrHandler()
        handler.setFormatter(ConciseFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
