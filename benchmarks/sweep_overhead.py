"""Sweep overhead: N trivial trials through ``biohash sweep run`` vs raw Ray Tune.

Both sides do the same work per trial (one DIGITS trial, 1 epoch of the
small CNN, predict, evaluate, via ``biohash.pipeline.run_trial``) on one
embedded 2-CPU Ray, in the same process, one after the other:

- raw: a plain function trainable calling ``run_trial`` and reporting its
  final metrics, ``reuse_actors=True``, no callbacks, no checkpoints;
- biohash: ``biohash sweep run`` (``run_sweep``) with everything on:
  per-epoch checkpoints, the run directory uploaded to storage, the Parquet sink and
  the MLflow sink
  (SQLite store).

Prints both wall times, the ratio (target <= 1.5) and the per-trial overhead.

    python benchmarks/sweep_overhead.py [--trials 100] [--quick]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

FIXED = dict(db="DIGITS", arch="cnn-small", loss="DPSH", nbits=16, bs=128, ep=1, pt=1, lr=1e-3,
             wd=0.0, weights="none", val_size=100, val_repeats=1)


def _raw(n: int, data_root: str, storage: str) -> float:
    from ray import tune

    from biohash.config import TrialConfig
    from biohash.pipeline import Runtime, run_trial

    def trainable(config):
        cfg = TrialConfig.from_dict(config["trial"])
        run_dir = Path(tune.get_context().get_trial_dir()) / "run"
        final = run_trial(cfg, run_dir, runtime=Runtime(data_root=data_root)).to_dict()
        tune.report(final)

    trials = [TrialConfig(**FIXED, seed=s).to_dict() for s in range(n)]
    t0 = time.perf_counter()
    tune.Tuner(trainable, param_space={"trial": tune.grid_search(trials)},
               tune_config=tune.TuneConfig(reuse_actors=True),
               run_config=tune.RunConfig(name="raw", storage_path=storage, verbose=0)).fit()
    return time.perf_counter() - t0


def _biohash(n: int, data_root: str, storage: str, mlflow_uri: str) -> float:
    from biohash.orchestrator import SweepOptions, run_sweep

    space = Path(storage).parent / "bench.yaml"
    fixed = ", ".join(f"{k}: {v}" for k, v in FIXED.items())
    space.write_text(f"description: overhead benchmark\nfixed: {{{fixed}}}\nrepeats: {n}\n")
    t0 = time.perf_counter()
    summary = run_sweep(SweepOptions(space=str(space), name="bench", storage=storage,
                                     data_root=data_root, mlflow_uri=mlflow_uri, verbose=0))
    elapsed = time.perf_counter() - t0
    assert summary.counts.get("finished") == n, summary
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="20 trials")
    args = ap.parse_args()
    n = 20 if args.quick else args.trials

    import ray

    from biohash.data import open_store

    with tempfile.TemporaryDirectory() as tmp:
        data_root = str(Path(tmp) / "data")
        open_store("DIGITS", data_root)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            raw = _raw(n, data_root, str(Path(tmp) / "raw"))
            ours = _biohash(n, data_root, str(Path(tmp) / "sweeps"),
                            f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        finally:
            ray.shutdown()
    ratio = ours / raw
    print(f"trials: {n}")
    print(f"raw Ray Tune     : {raw:8.1f} s  ({raw / n:.2f} s/trial)")
    print(f"biohash sweep run: {ours:8.1f} s  ({ours / n:.2f} s/trial)")
    print(f"ratio biohash/raw: {ratio:.2f}  (target <= 1.5: {'OK' if ratio <= 1.5 else 'ABOVE TARGET'})")
    print(f"per-trial overhead: {(ours - raw) / n:+.2f} s")


if __name__ == "__main__":
    main()
