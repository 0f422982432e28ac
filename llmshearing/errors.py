"""Exceptions that carry a one-line, user-facing message, and the exit code a command ends with.

Every command prints such an exception as one ``error: ...`` line (llmshearing/cli/command.py).
"""

EXIT_FAILURE = 1  # the input is fine, the work could not finish (a download, an upload)
EXIT_BAD_INPUT = 2  # an argument, path, shape or yaml key is wrong: fix it and run again


class LLMShearingError(ValueError):
    """Base class: bad input that the user can fix. The message names the problem."""

    exit_code = EXIT_BAD_INPUT


class ShapeError(LLMShearingError):
    """A target shape that cannot be reached from the source model."""


class ConfigError(LLMShearingError):
    """A yaml/config key or value that is not valid."""


class CheckpointError(LLMShearingError):
    """A checkpoint that is missing, corrupt, or of another model shape."""


class RunFailedError(RuntimeError):
    """The input was fine but the work could not finish; the message says what to do next."""

    exit_code = EXIT_FAILURE
