"""One trial's three phases: train -> predict -> evaluate.

Each phase is usable alone (``biohash train|predict|eval``) and they
communicate only through files in the run directory, so any phase can be
rerun by itself, as in the old workflow. ``run_trial`` composes them.

The names below are imported on first use (PEP 562): the phases need torch,
and the CLI imports ``biohash.pipeline.commands`` just to build its parser.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Runtime", "TrainResult", "train", "predict", "evaluate", "run_trial"]

_HOMES = {"Runtime": "runtime", "TrainResult": "train", "train": "train",
          "predict": "predict", "evaluate": "evaluate", "run_trial": "run"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
