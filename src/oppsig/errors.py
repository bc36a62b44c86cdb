"""Errors that oppsig raises on purpose.

Every error here carries a one-line message that says what went wrong and what
to do; the CLI prints ``error: <message>`` and exits with status 2 instead of a
stack trace.
"""

from __future__ import annotations


class OppsigError(Exception):
    """Base class of every error oppsig raises deliberately."""


class ConfigError(OppsigError, ValueError):
    """A config key is unknown, has the wrong type or an invalid value."""


class DataNotFoundError(OppsigError, FileNotFoundError):
    """A data set is not where oppsig looked for it."""


class DataFormatError(OppsigError, ValueError):
    """A data file exists but its content is not what it should be."""


class UnsafePickleError(DataFormatError):
    """A pickle asked to build an object outside the allowed set (possible code execution)."""


class DivergenceError(OppsigError, FloatingPointError):
    """The training loss became NaN or infinite."""


class StoreError(OppsigError, RuntimeError):
    """A run directory or its per-example store cannot be created, read or written."""


class RunExistsError(StoreError, FileExistsError):
    """A run directory already exists and overwriting was not asked for."""


class RunLockedError(StoreError):
    """Another process is writing the same run directory."""


class OppsigWarning(UserWarning):
    """Something is off but the result is still usable; the message says what (the CLI prints ``warning: ...``)."""


class DataMismatchError(OppsigError, ValueError):
    """The data a reader rebuilt for a run are not the data it trained on (their fingerprints differ)."""
