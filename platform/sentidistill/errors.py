"""User-facing errors: each one says what is wrong, where, and how to fix it."""


class SentiDistillError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(SentiDistillError):
    """A config file or override is invalid; the message names the dotted field path."""


class ModelNotFoundError(SentiDistillError):
    """A model reference could not be resolved; the message lists every place tried."""


class DataNotFoundError(SentiDistillError):
    """A data file could not be found; the message lists every place looked and the fetch command."""


class StageInputError(SentiDistillError):
    """A stage's input artifact is missing or malformed; the message names the file."""
