"""What every command does the same way: parse, run, and end with an exit code a script can test.

A problem the user can act on (``LLMShearingError``, ``RunFailedError`` and their kinds, a missing
file) is printed as one ``error: ...`` line on stderr and ends the command with its exit code:
2 for bad input (argument errors included), 1 for work that could not finish, 3 for a non-finite
training loss, 130 when interrupted. Anything else is a bug and keeps its traceback.

Light on purpose: parsers and ``--help`` must answer without importing torch.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator, List, Optional, Sequence

from llmshearing.errors import EXIT_BAD_INPUT, LLMShearingError, RunFailedError

EXIT_INTERRUPTED = 130
# set by parsing_only(): run_cli then parses its argv into this list and does no work
_PARSED: ContextVar[Optional[List[argparse.Namespace]]] = ContextVar("llmshearing_parsed", default=None)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a hint on what to do next (e.g. how to resume)."""


class CommandParser(argparse.ArgumentParser):
    """argparse, with its usage errors in the project's one-line form."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, description: str,
                   add_arguments: Callable[[argparse.ArgumentParser], None]) -> CommandParser:
    """A command's parser; ``description`` (e.g. its module's docstring) is shown as written."""
    parser = CommandParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def one_line(exc: BaseException) -> str:
    """The message on one line. An exception re-raised from a DataLoader worker carries the
    worker's traceback ("Caught CorpusError in DataLoader worker process 0. ..."): its last
    line holds the original message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return " ".join(lines) or type(exc).__name__


def exit_code_of(exc: BaseException) -> Optional[int]:
    """The exit code of a problem the user can act on; None for a bug."""
    if isinstance(exc, (LLMShearingError, RunFailedError)):
        return exc.exit_code
    if isinstance(exc, FileNotFoundError):
        return EXIT_BAD_INPUT
    return None


def run_command(work: Callable[[argparse.Namespace], Optional[int]], args: argparse.Namespace) -> int:
    """``work(args)``, its known errors as one ``error:`` line; returns the exit code."""
    try:
        return work(args) or 0
    except KeyboardInterrupt as exc:
        hint = f": {exc}" if str(exc) else ""
        print(f"interrupted{hint}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - sorted into user problems (one line) and bugs (re-raised)
        code = exit_code_of(exc)
        if code is None:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        return code


def run_cli(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], *, progress_logs: bool = True) -> int:
    """Parse ``argv`` (None: the process's own), then run the ``work`` the parser set as a default.

    ``progress_logs``: show the package's log records on stderr; a training run leaves logging to
    Composer, which tags each line with its rank.
    """
    args = parser.parse_args(argv)
    parsed = _PARSED.get()
    if parsed is not None:
        parsed.append(args)
        return 0
    if progress_logs:
        from llmshearing.cli.progress_logs import show_progress_logs

        show_progress_logs()
    return run_command(args.work, args)


@contextmanager
def parsing_only() -> Iterator[List[argparse.Namespace]]:
    """Inside it, every command parses its arguments (errors exit as usual) and does nothing else; the
    parsed arguments are appended to the list it yields (the docs check, tests/test_docs.py)."""
    parsed: List[argparse.Namespace] = []
    token = _PARSED.set(parsed)
    try:
        yield parsed
    finally:
        _PARSED.reset(token)
