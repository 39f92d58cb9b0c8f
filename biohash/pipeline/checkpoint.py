"""Checkpoints of one run: ``latest.pt`` (resume) and ``best.pt`` (predict).

``latest.pt`` holds everything needed to continue bit-for-bit on CPU:
weights (incl. feedback-matrix buffers), optimizer, learning-rate scheduler
(h2q's StepLR with -optim sgd; None otherwise), loss state (HashNet's
schedule counter, HyP2's proxies, the HSWD generator), AMP scaler, the
training state (incl. early stopping's counted best and wait count) and the
RNG states. ``best.pt`` holds only what predict needs. Both are written
atomically, so a crash mid-write leaves the previous file intact.
"""
from __future__ import annotations

import pickle
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biohash.errors import ConfigError
from biohash.storage import atomic_path

__all__ = ["CHECKPOINT_DIR", "LATEST", "BEST", "save", "load", "copy", "is_complete",
           "rng_state", "set_rng_state"]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
FORMAT = 1


def save(path: Path, payload: dict[str, Any]) -> Path:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(_plain({"format": FORMAT, **payload}), tmp)
    return path


def _plain(value: Any) -> Any:
    """Tensors, dicts, lists, tuples and Python scalars only, so that ``load`` can use
    ``weights_only=True``: NumPy scalars become Python numbers, arrays tensors."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def copy(src: Path, dst: Path) -> Path:
    """Copy a checkpoint file into place atomically (e.g. out of a Tune checkpoint)."""
    with atomic_path(dst, suffix=".pt") as tmp:
        shutil.copyfile(src, tmp)
    return dst


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint file: ``torch.save`` writes a zip
    archive, whose central directory comes last, so an empty or truncated file
    (a crash or a full disk during a non-atomic copy) is not a zip file."""
    return Path(path).is_file() and zipfile.is_zipfile(path)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint read from shared storage must
    not be able to run code. One that needs more than tensors and plain types
    is refused with a one-line error, and so is an empty or truncated file."""
    if Path(path).is_file() and not is_complete(path):
        raise ConfigError(f"checkpoint {str(path)!r} is empty or truncated; delete it to "
                          f"start that run afresh")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {str(path)!r} holds more than tensors and plain types, "
                          f"so it is not loaded (it could run code): {first}") from None


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
