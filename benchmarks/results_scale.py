"""Results at scale: `best`/`table` from 10,000 trial files, and batched MLflow logging.

Side by side in one process:

1. Parquet: 10,000 trial rows + 1,000,000 history rows written as per-trial
   files in 5 sweeps (as the sink writes them), then ``best`` and ``table``
   end to end (read files -> DataFrame -> rank -> markdown): *cold* (no
   snapshot: every file opened), *warm* (snapshot valid) and *incremental*
   (one trial rewritten since). Target: warm <= 2 s.
2. MLflow (one SQLite store): one trial's 100 epochs x 10 metrics logged
   batched (one ``log_batch`` per epoch, as the callback does) vs one
   ``log_metric`` call per value. Target: >= 5x.

Run: ``.venv/bin/python benchmarks/results_scale.py [--quick]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from biohash.analysis.formats import render
from biohash.analysis.tables import best_configs, paper_table
from biohash.config import TrialConfig
from biohash.results.reader import SNAPSHOT, load_results
from biohash.results.schema import (FINAL_METRICS, TIMES, history_rows, history_table, trial_row,
                                    trials_table)
from biohash.storage import write_table

MODES = ("bp", "fa", "usf", "frsf")
BITS = (16, 32, 64, 128)
HISTORY_KEYS = ("train/loss", "train/main", "train/quant", "val_mAP", "best_val_mAP",
                "time/epoch_s", "align/features.0", "align/features.3", "align/classifier.1",
                "align/hash")


def generate(root: Path, n_trials: int, epochs: int, n_sweeps: int = 5) -> int:
    """Per-trial files like the sink writes; returns the number of history rows."""
    fs, rng, n_hist = pafs.LocalFileSystem(), np.random.default_rng(0), 0
    for i in range(n_trials):
        sweep = f"sweep{i % n_sweeps}"
        cfg = TrialConfig(arch="bio-alexnet", mode=MODES[i % 4], nbits=BITS[(i // 4) % 4],
                          lr=1e-5 * (1 + (i // 16) % 50), seed=(i // 800) % 5,
                          loss=("DSH", "DCH")[(i // 4000) % 2])
        score = float(rng.uniform(0.2, 0.9))
        final = {"status": "finished", "score": score, "best_epoch": epochs, "epochs_run": epochs,
                 **{k: score for k in FINAL_METRICS}, **{k: 1.0 for k in TIMES}}
        history = [{"epoch": e, **{k: float(rng.random()) for k in HISTORY_KEYS}}
                   for e in range(1, epochs + 1)]
        base = f"{root}/{sweep}/results"
        write_table(fs, f"{base}/trials/{cfg.trial_id}.parquet",
                    trials_table([trial_row(sweep, cfg, final, code_version="bench")]))
        hist = history_table(history_rows(sweep, cfg, history))
        write_table(fs, f"{base}/history/{cfg.trial_id}.parquet", hist)
        n_hist += hist.num_rows
    return n_hist


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_parquet(root: Path) -> None:
    def best() -> str:
        return render(best_configs(load_results([root]), ("db", "nbits", "mode")), "markdown")

    def table() -> str:
        return render(paper_table(load_results([root]), "mode", ("db", "nbits")), "markdown")

    for snap in root.glob("*/results/trials/" + SNAPSHOT):
        snap.unlink()
    cold = timed(best)  # opens every file, writes the snapshots
    warm_best, warm_table = timed(best), timed(table)
    # Incremental: rewrite one trial file (a retry), then read again.
    one = next(root.glob("sweep0/results/trials/[!_.]*.parquet"))
    write_table(pafs.LocalFileSystem(), str(one), pq.read_table(one))
    incremental = timed(best)
    print(f"best  cold (opens all files, builds snapshot): {cold:7.2f} s")
    print(f"best  warm (snapshot):                         {warm_best:7.2f} s  target <= 2 s  "
          f"{'OK' if warm_best <= 2 else 'MISSED'}")
    print(f"table warm (snapshot):                         {warm_table:7.2f} s  target <= 2 s  "
          f"{'OK' if warm_table <= 2 else 'MISSED'}")
    print(f"best  after one trial rewritten:               {incremental:7.2f} s")
    print(f"cold / warm ratio: {cold / warm_best:.1f}x")


def bench_mlflow(tmp: Path, epochs: int, n_metrics: int = 10) -> None:
    from mlflow import MlflowClient

    from biohash.results.mlflow_log import SweepLogger

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    logger = SweepLogger(uri, sweep="bench", space="bench", storage=str(tmp))
    keys = HISTORY_KEYS[:n_metrics]
    batched_cfg, single_cfg = TrialConfig(seed=1), TrialConfig(seed=2)
    logger.child(batched_cfg)  # create both runs outside the timing
    single_run = logger.child(single_cfg).run_id

    def batched() -> None:
        for e in range(1, epochs + 1):
            logger.log_epoch(batched_cfg, e, {k: 0.5 for k in keys})

    client = MlflowClient(uri)

    def one_by_one() -> None:
        for e in range(1, epochs + 1):
            for k in keys:
                client.log_metric(single_run, k, 0.5, step=e)

    t_batch, t_single = timed(batched), timed(one_by_one)
    n = epochs * len(keys)
    print(f"MLflow {epochs} epochs x {len(keys)} metrics ({n} values), SQLite store:")
    print(f"  batched (1 log_batch per epoch): {t_batch:7.2f} s  ({epochs} requests)")
    print(f"  one call per metric:             {t_single:7.2f} s  ({n} requests)")
    ratio = t_single / t_batch
    print(f"  speed-up: {ratio:.1f}x  target >= 5x  {'OK' if ratio >= 5 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 trials, 20 epochs")
    args = parser.parse_args()
    n_trials, epochs, mlflow_epochs = (1000, 10, 20) if args.quick else (10_000, 10, 100)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweeps"
        start = time.perf_counter()
        n_hist = generate(root, n_trials, epochs)
        print(f"generated {n_trials} trial rows + {n_hist} history rows in 5 sweeps "
              f"({time.perf_counter() - start:.1f} s)")
        bench_parquet(root)
        bench_mlflow(Path(tmp), mlflow_epochs)


if __name__ == "__main__":
    main()
