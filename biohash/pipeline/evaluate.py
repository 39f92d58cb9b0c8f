"""Phase 3: retrieval metrics of the query and val folds against the database.

Writes ``{fold}-prediction_mAP.json`` as h2q's ``eval_map.py`` did: ``mAP``,
``hparams`` (what predict saved in ``hparams.json``), ``output_path`` (where
the file lands in the ``eval/`` tree), ``datafold``, ``mAP_at_k=1000``,
``mAP_at_k=5000``, in that order and 4-space indented; after them come
biohash's further metrics (``mAP_at_h=<h>``, ``P_at_k=<k>``) and ``score``,
the paper's headline metric for the dataset. The file is written in the run
directory and, if that sits in a ``models/<group>/<db>/<exp>/<run>`` tree,
also in the sibling ``eval/<group>/<db>/<exp>/<run>`` tree, where h2q wrote
it and old notebooks look.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from biohash.config import TrialConfig
from biohash.contract import EVAL_FOLDS
from biohash.errors import ConfigError
from biohash.pipeline.predict import HPARAMS_FILE, fold_file, h2q_hparams
from biohash.utils import atomic_write_text

__all__ = ["EVAL_FOLDS", "evaluate", "eval_file", "eval_document"]

def eval_file(run_dir: Path, fold: str) -> Path:
    return Path(run_dir) / f"{fold}-prediction_mAP.json"


def _load(run_dir: Path, fold: str) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = fold_file(run_dir, fold, "features"), fold_file(run_dir, fold, "labels")
    if not feats.is_file() or not labels.is_file():
        raise ConfigError(f"no predictions for fold {fold!r} in {str(run_dir)!r}; "
                          f"run 'biohash predict' with the same flags first")
    return np.load(feats, mmap_mode="r"), np.load(labels, mmap_mode="r")


def _mirror(run_dir: Path) -> Path | None:
    """The ``eval/`` twin of a ``models/<group>/<db>/<exp>/<run>`` directory:
    spelled as given when the given path names that tree (h2q's
    ``output_path`` is relative then too), else from the resolved path."""
    for path in (run_dir, run_dir.resolve()):
        parts = path.parts
        if len(parts) >= 5 and parts[-5] == "models":
            return Path(*parts[:-5], "eval", *parts[-4:])
    return None


def _hparams(cfg: TrialConfig, run_dir: Path) -> dict[str, Any]:
    """``hparams.json`` as predict saved it (h2q's eval read that file); built
    from the config for runs predicted before biohash wrote it."""
    path = run_dir / HPARAMS_FILE
    if not path.is_file():
        return h2q_hparams(cfg)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"unreadable {path}: {exc}; rerun 'biohash predict' to rewrite it") \
            from None


def eval_document(metrics: dict[str, float], hparams: dict[str, Any], output_path: Path,
                  fold: str) -> dict[str, Any]:
    """One eval JSON: h2q's keys in h2q's order, then the other metrics and ``score``."""
    doc: dict[str, Any] = {"mAP": metrics["mAP"], "hparams": hparams,
                           "output_path": str(output_path), "datafold": fold}
    doc.update(metrics)  # "mAP" keeps its place; mAP_at_k=1000, 5000, ... follow
    return doc


def evaluate(run_dir: str | Path, *, folds: tuple[str, ...] = EVAL_FOLDS) -> tuple[dict[str, dict], float]:
    """Metrics per fold (old metric keys + ``score``) and the seconds taken.

    The returned metrics are the JSON files' numbers; the files also carry
    ``hparams``, ``output_path`` and ``datafold``.
    """
    from biohash.metrics import evaluate_retrieval, headline_key

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    cfg = TrialConfig.from_run_dir(run_dir)
    for fold in folds:
        if fold not in EVAL_FOLDS:
            raise ConfigError(f"unknown eval fold {fold!r}; choose from {', '.join(EVAL_FOLDS)}")
    db_feats, db_labels = _load(run_dir, "database")
    hparams = _hparams(cfg, run_dir)
    results: dict[str, dict] = {}
    mirror = _mirror(run_dir)
    for fold in folds:
        q_feats, q_labels = _load(run_dir, fold)
        metrics = evaluate_retrieval(np.asarray(q_feats), np.asarray(db_feats),
                                     np.asarray(q_labels), np.asarray(db_labels))
        metrics["score"] = metrics[headline_key(cfg.db)]
        results[fold] = metrics
        output_path = eval_file(mirror if mirror is not None else run_dir, fold)
        text = json.dumps(eval_document(metrics, hparams, output_path, fold), indent=4)
        atomic_write_text(eval_file(run_dir, fold), text)
        if mirror is not None:
            atomic_write_text(output_path, text)
    return results, time.perf_counter() - t0
