"""Phase 3: retrieval metrics of the query and val folds against the database.

Writes ``{fold}-prediction_mAP.json`` with h2q's keys (``mAP``,
``mAP_at_k=1000``, ``mAP_at_h=0`` ...) plus ``score``, the paper's
headline metric for the dataset. If the run directory sits in a
``models/<group>/<db>/<exp>/<run>`` tree, the JSON is mirrored into the
sibling ``eval/<group>/<db>/<exp>/<run>`` tree, where old notebooks look.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from biohash.config import TrialConfig
from biohash.errors import ConfigError
from biohash.pipeline.predict import fold_file
from biohash.utils import atomic_write_json

__all__ = ["EVAL_FOLDS", "evaluate", "eval_file"]

EVAL_FOLDS = ("query", "val")


def eval_file(run_dir: Path, fold: str) -> Path:
    return Path(run_dir) / f"{fold}-prediction_mAP.json"


def _load(run_dir: Path, fold: str) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = fold_file(run_dir, fold, "features"), fold_file(run_dir, fold, "labels")
    if not feats.is_file() or not labels.is_file():
        raise ConfigError(f"no predictions for fold {fold!r} in {str(run_dir)!r}; "
                          f"run 'biohash predict' with the same flags first")
    return np.load(feats, mmap_mode="r"), np.load(labels, mmap_mode="r")


def _mirror(run_dir: Path) -> Path | None:
    parts = run_dir.resolve().parts
    if len(parts) >= 5 and parts[-5] == "models":
        return Path(*parts[:-5], "eval", *parts[-4:])
    return None


def evaluate(run_dir: str | Path, *, folds: tuple[str, ...] = EVAL_FOLDS) -> tuple[dict[str, dict], float]:
    """Metrics per fold (old keys + ``score``) and the seconds taken."""
    from biohash.metrics import evaluate_retrieval, headline_key

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    cfg = TrialConfig.from_run_dir(run_dir)
    for fold in folds:
        if fold not in EVAL_FOLDS:
            raise ConfigError(f"unknown eval fold {fold!r}; choose from {', '.join(EVAL_FOLDS)}")
    db_feats, db_labels = _load(run_dir, "database")
    results: dict[str, dict] = {}
    mirror = _mirror(run_dir)
    for fold in folds:
        q_feats, q_labels = _load(run_dir, fold)
        metrics = evaluate_retrieval(np.asarray(q_feats), np.asarray(db_feats),
                                     np.asarray(q_labels), np.asarray(db_labels))
        metrics["score"] = metrics[headline_key(cfg.db)]
        results[fold] = metrics
        atomic_write_json(eval_file(run_dir, fold), metrics)
        if mirror is not None:
            atomic_write_json(eval_file(mirror, fold), metrics)
    return results, time.perf_counter() - t0
