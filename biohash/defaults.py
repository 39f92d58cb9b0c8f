"""Where things are when the user does not say: the environment's defaults.

One owner for the variables a cluster sets once on every node (see
``cluster.yaml``) and that every command taking ``--storage``, ``--data-root``
or ``--root`` reads as its default. Torch-, Ray- and MLflow-free: the CLI
builds its parsers from here.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["STORAGE_ENV", "DATA_ROOT_ENV", "default_storage", "default_data_root",
           "default_mlflow_uri", "mlflow_artifact_root"]

STORAGE_ENV = "BIOHASH_STORAGE"
DATA_ROOT_ENV = "BIOHASH_DATA_ROOT"


def default_storage() -> str:
    """``--storage`` default: ``$BIOHASH_STORAGE``, else ``sweeps`` (in the working directory)."""
    return os.environ.get(STORAGE_ENV) or "sweeps"


def default_data_root() -> str:
    """``--data-root`` / ``--root`` default: ``$BIOHASH_DATA_ROOT``, else ``data`` (h2q's folder)."""
    return os.environ.get(DATA_ROOT_ENV) or "data"


#: The scheme of an MLflow tracking store kept in one SQLite file.
_SQLITE = "sqlite:///"


def default_mlflow_uri() -> str:
    """``--mlflow-uri`` default: ``sqlite:///<cwd>/mlflow.db``, the embedded
    tracking store (MLflow 3.13+ refuses ``file:`` stores)."""
    return f"{_SQLITE}{Path.cwd() / 'mlflow.db'}"


def mlflow_artifact_root(tracking_uri: str) -> str | None:
    """Where MLflow artifacts go for ``tracking_uri``: ``mlartifacts/`` beside a
    SQLite store's file (a ``file://`` URI), so the sweep logger and ``biohash
    ui`` agree and nothing lands in ``./mlruns`` of whatever the working
    directory is; None for a server, which decides itself (proxied artifacts)."""
    if not tracking_uri.startswith(_SQLITE):
        return None
    return (Path(tracking_uri[len(_SQLITE):]).parent / "mlartifacts").resolve().as_uri()
