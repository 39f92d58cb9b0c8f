"""The registries' names, torch-free: what ``-arch``, ``-loss``, ``-mode`` and ``-db`` accept.

Archs, losses and learning rules register their builders in modules that
import torch (``models.hashing``, ``losses.*``, ``bio.rules``). Checking a
name (a flag, a search-space value) must not cost a torch import, so each of
those registries is declared here by its names and loaded on first use (see
``biohash.registry.LazyRegistry``, which also checks on that load that the
names below are exactly the ones registered). Datasets register in a
torch-free module, so their names are read from it.

``REGISTRIES`` maps the ``registry`` metadata of ``TrialConfig`` fields to
these objects; ``biohash.models.ARCHS``, ``biohash.losses.LOSSES`` and
``biohash.bio.MODES`` are the same objects.
"""
from __future__ import annotations

from typing import Any

from biohash.registry import LazyRegistry

__all__ = ["ARCHS", "LOSSES", "MODES", "DATASETS", "REGISTRIES"]

#: Base archs (``bio-<arch>`` is a base arch converted; ``hhnet`` = ``hhnet-w18``).
ARCHS: LazyRegistry[Any] = LazyRegistry(
    "arch", "biohash.models.hashing:ARCHS",
    ("alexnet", "vgg16", "hhnet", "hhnet-w18", "hhnet-w32", "hhnet-w18_small", "cnn-small"))
#: Hashing losses (h2q's ``-loss`` names and the opt-in ``DHN_paper``).
LOSSES: LazyRegistry[Any] = LazyRegistry(
    "loss", "biohash.losses.base:LOSSES",
    ("DCH", "DPSH", "HyP2", "DSH", "DHN", "DHN_paper", "WGLHH", "HashNet", "CEL"),
    modules=("biohash.losses.pairwise", "biohash.losses.proxy"))
#: Learning rules (``-mode``); ``frozen`` is a scope pseudo-mode, not a rule.
MODES: LazyRegistry[Any] = LazyRegistry(
    "mode", "biohash.bio.rules:MODES", ("bp", "fa", "usf", "frsf", "brsf", "dfa"))
#: Datasets: ``biohash.data`` is torch-free, so the names come from its registry.
DATASETS: LazyRegistry[Any] = LazyRegistry("dataset", "biohash.data:DATASETS")

#: Registry kind (a ``TrialConfig`` field's ``registry`` metadata) -> registry.
REGISTRIES: dict[str, LazyRegistry[Any]] = {
    "dataset": DATASETS, "loss": LOSSES, "mode": MODES, "arch": ARCHS}
