"""Where things are when the user does not say: the environment's defaults.

One owner for the variables a cluster sets once on every node (see
``cluster.yaml``) and that every command taking ``--storage``, ``--data-root``
or ``--root`` reads as its default. Torch-, Ray- and MLflow-free: the CLI
builds its parsers from here.
"""
from __future__ import annotations

import os

__all__ = ["STORAGE_ENV", "DATA_ROOT_ENV", "default_storage", "default_data_root"]

STORAGE_ENV = "BIOHASH_STORAGE"
DATA_ROOT_ENV = "BIOHASH_DATA_ROOT"


def default_storage() -> str:
    """``--storage`` default: ``$BIOHASH_STORAGE``, else ``sweeps`` (in the working directory)."""
    return os.environ.get(STORAGE_ENV) or "sweeps"


def default_data_root() -> str:
    """``--data-root`` / ``--root`` default: ``$BIOHASH_DATA_ROOT``, else ``data`` (h2q's folder)."""
    return os.environ.get(DATA_ROOT_ENV) or "data"
