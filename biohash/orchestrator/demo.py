"""``biohash demo`` (what ``make demo`` runs): the whole tool in one command.

Runs the shipped ``demo`` space (DIGITS, small CNN, 4 rules x 2 code
lengths x 2 losses) on an embedded local Ray, then prints the best config
per rule and code length, a paper-style table, and where the MLflow store,
the Parquet results and the plots are. No download, no GPU.
"""
from __future__ import annotations

import os

__all__ = ["run_demo"]


def run_demo(*, storage: str = "sweeps", mlflow_uri: str | None = None,
             space: str = "demo") -> int:
    from biohash.analysis.plots import plot
    from biohash.analysis.formats import render
    from biohash.analysis.tables import best_configs, paper_table
    from biohash.orchestrator.sweep import SweepOptions, default_mlflow_uri, run_sweep
    from biohash.results import load_history, load_results

    tracking = mlflow_uri or default_mlflow_uri()
    summary = run_sweep(SweepOptions(space=space, storage=storage, mlflow_uri=tracking,
                                     num_cpus=os.cpu_count(), verbose=1))
    name = summary.name
    sweep_dir = f"{summary.path}"
    results = load_results([sweep_dir])
    best = best_configs(results, ("nbits", "mode"), "score")
    cols = ["nbits", "mode", "score", "score_std", "loss", "lr", "bs", "ep"]
    print("\nBest config per code length and learning rule (score = query mAP@5000):\n")
    print(render(best[[c for c in cols if c in best.columns]], "markdown"))
    print("Paper-style table (x100):\n")
    print(render(paper_table(results, rows="mode", cols="nbits"), "markdown"))
    plots = plot("all", results, load_history([sweep_dir]), os.path.join(sweep_dir, "plots"))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items()))
    print(f"sweep {name}: {summary.n_trials} trials ({counts})")
    print(f"  Parquet results : {sweep_dir}/results/  (biohash results table {name} "
          f"--storage {storage})")
    print(f"  plots           : {len(plots)} PNG files in {sweep_dir}/plots/")
    print(f"  MLflow store    : {tracking}  (browse: biohash ui --mlflow-uri {tracking})")
    return 1 if summary.errors else 0
