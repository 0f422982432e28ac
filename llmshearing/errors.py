"""Exceptions that carry a one-line, user-facing message."""


class LLMShearingError(ValueError):
    """Base class: bad input that the user can fix. The message names the problem."""


class ShapeError(LLMShearingError):
    """A target shape that cannot be reached from the source model."""


class ConfigError(LLMShearingError):
    """A yaml/config key or value that is not valid."""


class CheckpointError(LLMShearingError):
    """A checkpoint that is missing, corrupt, or of another model shape."""
