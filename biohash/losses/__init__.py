"""Hashing losses (the old ``-loss`` names) and the penalties added to any loss.

``create_loss(name, nbits=..., num_classes=..., penalty=..., similar_probability=...)``
builds a :class:`HashLoss`; ``loss(u, y)`` takes the raw hash-layer output and
float multi-hot labels and returns ``LossOutput(total, parts)``. By default
every loss computes exactly what h2q computed. Registered: DCH, DPSH, HyP2,
DSH, DHN, WGLHH, HashNet, CEL, and the opt-in DHN_paper (see ``LOSSES.names()``).

``import biohash.losses`` is torch-free: ``LOSSES`` answers names from
``biohash.catalog``; the losses (and torch) load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

from biohash.catalog import LOSSES

__all__ = ["LOSSES", "HashLoss", "LossOutput", "create_loss", "separation",
           "l2_quantization", "hswd_penalty", "similarity",
           "DSH", "DPSH", "DHN", "DHN_paper", "DCH", "WGLHH", "HashNet", "HyP2", "CEL"]

#: Attribute -> the submodule defining it (imported on first access).
_LAZY = {**dict.fromkeys(("HashLoss", "LossOutput", "create_loss", "l2_quantization",
                          "hswd_penalty", "similarity"), "base"),
         **dict.fromkeys(("DSH", "DPSH", "DHN", "DHN_paper", "DCH", "WGLHH", "HashNet"),
                         "pairwise"),
         **dict.fromkeys(("CEL", "HyP2", "separation"), "proxy")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        LOSSES.load()  # every loss registered before any is used
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
