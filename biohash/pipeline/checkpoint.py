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

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biohash.utils import atomic_path

__all__ = ["CHECKPOINT_DIR", "LATEST", "BEST", "save", "load", "copy", "rng_state",
           "set_rng_state"]

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
FORMAT = 1


def save(path: Path, payload: dict[str, Any]) -> Path:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def copy(src: Path, dst: Path) -> Path:
    """Copy a checkpoint file into place atomically (e.g. out of a Tune checkpoint)."""
    with atomic_path(dst, suffix=".pt") as tmp:
        shutil.copyfile(src, tmp)
    return dst


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only=False: the payload holds RNG states and plain dicts we wrote
    # ourselves; checkpoints are trusted files of the user's own runs.
    return torch.load(path, map_location=map_location, weights_only=False)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
