"""Architectures: a registry of backbones, each topped by the same hash head.

Every model is a :class:`HashingModel` with exactly two children, ``backbone``
(images -> feature vector) and ``head`` (the hash layer, a Linear to nbits),
so Hybrid Bio-Training scopes (``-bio_scope backbone=bp,head=fa``) mean the
same thing for every arch. ``bio-<arch>`` is ``<arch>`` converted with
:func:`biohash.bio.convert`.

Registered names (``ARCHS.names()``): ``alexnet``, ``vgg16`` (torchvision,
as in h2q), ``hhnet-w18`` / ``hhnet-w32`` / ``hhnet-w18_small`` (HRNet from
timm, arXiv:2403.13747) and ``cnn-small`` (the embedded DIGITS sets).

``import biohash.models`` is torch-free: ``ARCHS`` answers names from
``biohash.catalog``; the builders (and torch) load on first use.
"""
from __future__ import annotations

from typing import Any

from biohash.catalog import ARCHS

__all__ = ["ARCHS", "ArchSpec", "HashingModel", "create_model"]


def __getattr__(name: str) -> Any:
    if name in ("ArchSpec", "HashingModel", "create_model"):
        from biohash.models import hashing

        return getattr(hashing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
