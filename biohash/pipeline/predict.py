"""Phase 2: hash every fold with the best checkpoint.

Per fold, in the run directory: ``{fold}-features.npy`` (float32 raw
hash-layer outputs, N x nbits, before tanh), ``{fold}-codes.npy`` (int8
signs) and ``{fold}-labels.npy`` (uint8 multi-hot), so evaluate needs
nothing but the run directory; plus ``hparams.json`` as h2q's predict wrote
it (old notebooks load it beside the hashes).

``{fold}-hashes.tsv`` is h2q's text format (``save_sign_hashes``: one row
per item, ``np.sign`` of the raw outputs as integers, tab-separated, no
header, ``\n`` line ends), written only when asked for (``-tsv``): h2q
always wrote it, but at ImageNet scale it is ~20x larger than the .npy.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from biohash.config import TrialConfig
from biohash.errors import ConfigError
from biohash.pipeline import checkpoint as ckpt
from biohash.pipeline.runtime import Runtime, TrialContext, forward_features, open_context
from biohash.storage import atomic_path
from biohash.utils import atomic_write_text

__all__ = ["FOLDS", "HPARAMS_FILE", "predict", "fold_file", "h2q_hparams", "write_hashes_tsv"]

#: The folds predicted, in h2q's order (its ``hparams.json`` lists them so):
#: the same folds as ``biohash.data.store.FOLDS``, which keeps another order.
FOLDS = ("train", "val", "query", "database")
HPARAMS_FILE = "hparams.json"

#: h2q's predict-stage arguments (``src/models/PenaltyStrategies/hparams.json``,
#: ``vars(args)`` keys = the long flag names), in its order, with the fork's
#: ``mode`` after ``batch_size``: (h2q key, TrialConfig field). ``datafolds``
#: is the folds predicted.
_H2Q_ARGS = (("experiment_name", "exp"), ("database", "db"), ("loss", "loss"),
             ("number_of_bits", "nbits"), ("transformations", "trf"),
             ("architecture", "arch"), ("seed", "seed"), ("batch_size", "bs"),
             ("mode", "mode"), ("num_workers", "nw"), ("epochs", "ep"), ("patience", "pt"),
             ("learning_rate", "lr"), ("weight_decay", "wd"), ("optimizer", "optim"),
             ("datafolds", None), ("no_skip", "no_skip"), ("penalty", "penalty"),
             ("L2_penalty", "L2_penalty"), ("HSWD_penalty", "HSWD_penalty"),
             ("no_cube", "no_cube"))
#: biohash fields without an h2q flag, appended under their own names.
_BIOHASH_ARGS = ("bio_scope", "weights", "val_size", "val_repeats", "precision")


def fold_file(run_dir: Path, fold: str, kind: str) -> Path:
    """``kind``: features | codes | labels."""
    return Path(run_dir) / f"{fold}-{kind}.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def h2q_hparams(cfg: TrialConfig, folds: tuple[str, ...] = FOLDS) -> dict[str, Any]:
    """What h2q's predict saved as ``hparams.json`` (and eval copied into each
    eval JSON as ``hparams``): its predict arguments under their long names,
    then ``model`` and ``commit`` (h2q: the git commit; here the biohash
    version), then the biohash additions under their field names."""
    from biohash import __version__

    out: dict[str, Any] = {key: list(folds) if name is None else getattr(cfg, name)
                           for key, name in _H2Q_ARGS}
    out["model"] = "PenaltyStrategies"
    out["commit"] = f"biohash {__version__}"
    out.update({name: getattr(cfg, name) for name in _BIOHASH_ARGS})
    return out


def write_hashes_tsv(path: str | Path, codes: np.ndarray) -> Path:
    r"""h2q's ``{fold}-hashes.tsv``: one line per item, its signs as integers
    (``-1``, ``0``, ``1``) separated by ``\t``, ``\n`` after each line.

    Byte-identical to h2q's rows through ``csv.writer(delimiter="\t",
    lineterminator="\n")``, built with array operations instead of one
    Python call per item.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] == 0 or not np.isin(codes, (-1, 0, 1)).all():
        raise ConfigError(f"hash codes must be a 2-D array of -1/0/1 with at least one bit; "
                          f"got shape {codes.shape}")
    # Each value as a 3-byte cell "-1\t", "0\t", "1\t" (the last two 2 bytes wide).
    cells = np.frombuffer(b"-1\t0\t\x001\t\x00", dtype=np.uint8).reshape(3, 3)
    width = np.array([3, 2, 2], dtype=np.int8)
    which = codes.astype(np.int8) + 1                          # (N, B) cell of each value
    text = cells[which]                                        # (N, B, 3)
    text[np.arange(len(codes)), -1, width[which[:, -1]] - 1] = ord("\n")  # row's last tab
    keep = np.arange(3, dtype=np.int8) < width[which][..., None]  # (N, B, 3)
    with atomic_path(path) as tmp:
        tmp.write_bytes(text[keep].tobytes())
    return Path(path)


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
    atomic_write_text(run_dir / HPARAMS_FILE, json.dumps(h2q_hparams(cfg, folds), indent=True))
    for fold in folds:
        data = ctx.store.fold(fold)
        features = forward_features(ctx, data)
        codes = np.sign(features).astype(np.int8)
        _save_npy(fold_file(run_dir, fold, "features"), features)
        _save_npy(fold_file(run_dir, fold, "codes"), codes)
        _save_npy(fold_file(run_dir, fold, "labels"), np.asarray(data.labels, dtype=np.uint8))
        if hashes_tsv:
            write_hashes_tsv(run_dir / f"{fold}-hashes.tsv", codes)
    return time.perf_counter() - t0
