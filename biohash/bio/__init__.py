"""Biologically plausible learning rules for Linear/Conv2d layers.

``MODES`` (bp, fa, usf, frsf, brsf, dfa) names the rules; ``convert`` turns a
model's layers into ``BioLinear``/``BioConv2d`` for one rule or per part
(Hybrid Bio-Training); ``alignment_angles``/``gradient_alignment`` are the
per-layer diagnostics. See ``biohash.bio.rules`` for the B of each rule and
``biohash.bio.convert`` for DFA's behaviour on skip connections.

``import biohash.bio`` is torch-free: ``MODES`` (names declared in
``biohash.catalog``) and ``FROZEN`` are plain attributes; everything else
imports torch on first access.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any

from biohash.catalog import MODES
from biohash.config import FROZEN

__all__ = ["MODES", "INITS", "FROZEN", "BioLinear", "BioConv2d", "convert", "is_bio",
           "alignment_angles", "gradient_alignment"]

#: Attribute -> the submodule defining it (imported on first access).
_LAZY = {"convert": "convert", "is_bio": "convert", "alignment_angles": "diagnostics",
         "gradient_alignment": "diagnostics", "BioConv2d": "layers", "BioLinear": "layers",
         "INITS": "rules"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(f"{__name__}.{_LAZY[name]}")
    # Importing the submodule ``convert`` binds the package attribute
    # ``convert`` to that module; bind every lazy name whose submodule is now
    # loaded (the function ``convert`` included) so later lookups find them.
    for attr, sub in _LAZY.items():
        module = sys.modules.get(f"{__name__}.{sub}")
        if module is not None:
            globals()[attr] = getattr(module, attr)
    return globals()[name]
