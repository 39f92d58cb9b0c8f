"""Phase 2: hash every fold with the best checkpoint.

Per fold, in the run directory: ``{fold}-features.npy`` (float32 raw
hash-layer outputs, N x nbits, before tanh), ``{fold}-codes.npy`` (int8
signs) and ``{fold}-labels.npy`` (uint8 multi-hot), so evaluate needs
nothing but the run directory. ``{fold}-hashes.tsv`` (the old text format)
only when asked for: at ImageNet scale it is ~20x larger than the .npy.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from biohash.config import TrialConfig
from biohash.errors import ConfigError
from biohash.pipeline import checkpoint as ckpt
from biohash.pipeline.runtime import Runtime, TrialContext, forward_features, open_context
from biohash.utils import atomic_path

__all__ = ["FOLDS", "predict", "fold_file"]

FOLDS = ("train", "val", "query", "database")


def fold_file(run_dir: Path, fold: str, kind: str) -> Path:
    """``kind``: features | codes | labels."""
    return Path(run_dir) / f"{fold}-{kind}.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def _save_tsv(path: Path, ids: np.ndarray, features: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            for item, row in zip(ids, features):
                fh.write(str(item) + "\t" + "\t".join(f"{v:.7g}" for v in row) + "\n")


def predict(cfg: TrialConfig, run_dir: str | Path, *, runtime: Runtime | None = None,
            folds: tuple[str, ...] = FOLDS, hashes_tsv: bool = False,
            ctx: TrialContext | None = None) -> float:
    """Write features, codes and labels of ``folds``; returns the seconds taken.

    ``ctx``: an already opened context of ``cfg`` to reuse (its model gets the
    best weights loaded).
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    best = run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST
    if not best.is_file():
        raise ConfigError(f"no trained model in {str(run_dir)!r} (missing {ckpt.CHECKPOINT_DIR}/"
                          f"{ckpt.BEST}); run 'biohash train' with the same flags first")
    for fold in folds:
        if fold not in FOLDS:
            raise ConfigError(f"unknown fold {fold!r}; choose from {', '.join(FOLDS)}")
    ctx = ctx or open_context(cfg, runtime or Runtime())
    payload = ckpt.load(best, map_location=ctx.device)
    ctx.model.load_state_dict(payload["model"])
    for fold in folds:
        data = ctx.store.fold(fold)
        features = forward_features(ctx, data)
        _save_npy(fold_file(run_dir, fold, "features"), features)
        _save_npy(fold_file(run_dir, fold, "codes"), np.sign(features).astype(np.int8))
        _save_npy(fold_file(run_dir, fold, "labels"), np.asarray(data.labels, dtype=np.uint8))
        if hashes_tsv:
            _save_tsv(run_dir / f"{fold}-hashes.tsv", np.asarray(data.ids), features)
    return time.perf_counter() - t0
