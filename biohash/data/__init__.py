"""Datasets in one fast processed store.

- ``DATASETS``: the registry of dataset classes (facts as class constants);
- ``download`` / ``process`` / ``import_h2q``: raw files -> ``<root>/processed/<NAME>/``;
- ``open_store`` -> ``Store`` -> ``Fold`` (memmapped uint8 images, labels, ids);
  ``Store.similar_probability`` is the train fold's similar-pair probability p;
- ``BatchLoader``: normalised device batches (torch; imported lazily);
- ``materialize``: copy a remote (s3://, gs://, file://) store to a node-local cache.

``import biohash.data`` is torch-free (the sweep planner imports it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from biohash.data.base import DATASETS, Dataset
from biohash.data.store import (FOLDS, Fold, Store, is_processed, missing_message, open_store,
                                store_dir)
from biohash.data import small as _small, web as _web  # noqa: F401  (register datasets)
from biohash.data.h2q import import_h2q
from biohash.data.remote import materialize

__all__ = ["DATASETS", "FOLDS", "Dataset", "Fold", "Store", "open_store", "is_processed",
           "missing_message", "store_dir", "process", "download", "import_h2q", "materialize",
           "BatchLoader"]


def process(name: str, root: str = "data", **kwargs: Any) -> Path:
    """Process ``name`` from ``<root>/raw/<name>`` (or ``raw=``) into the store; returns its
    folder. ``kwargs``: ``sizes``, ``strict``, ``workers``, ``progress``, ``variant``
    (see ``Dataset``; MS_COCO: ``"h2q"`` default, ``"clean80"`` opt-in)."""
    return DATASETS.get(name)(root, **kwargs).process()


def download(name: str, root: str = "data", **kwargs: Any) -> str:
    """Fetch the raw files of ``name`` into ``<root>/raw/<name>``; returns a summary line
    (for ImageNet: the manual steps). Resumable: re-run after an interruption."""
    return DATASETS.get(name)(root, **kwargs).download()


def __getattr__(name: str) -> Any:
    if name == "BatchLoader":
        from biohash.data.loader import BatchLoader

        return BatchLoader
    raise AttributeError(f"module 'biohash.data' has no attribute {name!r}")
