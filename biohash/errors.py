"""Exception hierarchy: every user-facing failure is a ``BiohashError``.

The CLI maps any ``BiohashError`` to exit status 2 and prints its message as a
single line, so messages must name the bad value and what is allowed.
"""
from __future__ import annotations

__all__ = ["BiohashError", "ConfigError", "DataError", "SweepError", "ResultsError"]


class BiohashError(Exception):
    """Base class; the message is shown to the user as one line."""


class ConfigError(BiohashError, ValueError):
    """A name, flag or value is not allowed (unknown arch, lr <= 0, ...)."""


class DataError(BiohashError):
    """A dataset is missing, incomplete, corrupted or in the wrong format."""


class SweepError(BiohashError):
    """A sweep cannot be planned, launched, resumed or read."""


class ResultsError(BiohashError):
    """Results (Parquet / MLflow) are missing, unreadable or of another schema."""
