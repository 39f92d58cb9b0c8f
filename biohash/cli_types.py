"""argparse ``type=`` functions for flags whose values must be finite numbers or names.

``float("nan")`` and ``float("inf")`` parse, and every comparison with NaN is
False, so a check like ``value < 0`` lets NaN through to Ray or a sleep loop.
These types refuse them while the arguments are parsed, before anything
starts, with argparse's one line (``argument --x: ...``; see ``biohash.cli.Parser``).
"""
from __future__ import annotations

import argparse
import math

from biohash.errors import ConfigError
from biohash.names import check_name

__all__ = ["finite_float", "nonnegative_float", "positive_float", "name"]


def finite_float(text: str) -> float:
    """A float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (e.g. seconds, GPUs per trial)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; allowed: a finite number >= 0")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (e.g. CPUs per trial)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not > 0; allowed: a finite number > 0")
    return value


def name(text: str) -> str:
    """A name that becomes a folder (sweep, group): ``biohash.names.check_name``'s rule."""
    try:
        return check_name(text, "name")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("bad name ")) from None
