"""``biohash demo`` (what ``make demo`` runs): the whole tool in one command.

Runs the shipped ``demo`` space (DIGITS, small CNN, 4 rules x 2 code
lengths x 2 losses) on an embedded local Ray, then prints the best config
per rule and code length, a paper-style table, and where the MLflow store,
the Parquet results and the plots are: absolute addresses, true after the
command (the storage is resolved once on the driver, see ``run_sweep``).
No download, no GPU.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["run_demo"]


def _plots_dir(sweep_uri: str, name: str) -> Path:
    """``<sweep>/plots`` for a local sweep; PNGs are written locally, so a sweep
    in object storage gets ``./plots/<sweep>`` instead."""
    from biohash.storage import is_local, plots_dir, resolve

    sweep = resolve(sweep_uri)
    if not is_local(sweep.fs):
        return Path(plots_dir(resolve(Path.cwd())).join(name).path)
    return Path(plots_dir(sweep).path)


def run_demo(*, storage: str | None = None, mlflow_uri: str | None = None,
             space: str = "demo") -> int:
    """Run the demo sweep and print results and locations; returns the exit status
    (0 all trials done, see ``SweepSummary.exit_status`` otherwise)."""
    from biohash.analysis.plots import plot
    from biohash.analysis.formats import render
    from biohash.analysis.tables import best_configs, paper_table
    from biohash.orchestrator.commands import print_summary
    from biohash.orchestrator.sweep import (SweepOptions, default_mlflow_uri, default_storage,
                                            storage_location, run_sweep)
    from biohash.results import load_history, load_results
    from biohash.storage import absolute_address

    tracking = mlflow_uri or default_mlflow_uri()
    root = storage_location(default_storage() if storage is None else storage)
    summary = run_sweep(SweepOptions(space=space, storage=root.uri, mlflow_uri=tracking,
                                     num_cpus=os.cpu_count(), verbose=1))
    if summary.interrupted:
        return print_summary(summary)
    name, sweep_dir = summary.name, summary.path
    results = load_results([sweep_dir])
    best = best_configs(results, ("nbits", "mode"), "score")
    cols = ["nbits", "mode", "score", "score_std", "loss", "lr", "bs", "ep"]
    print("\nBest config per code length and learning rule (score = query mAP@5000):\n")
    print(render(best[[c for c in cols if c in best.columns]], "markdown"))
    print("Paper-style table (x100):\n")
    print(render(paper_table(results, rows="mode", cols="nbits"), "markdown"))
    plots_dir = _plots_dir(sweep_dir, name)
    plots = plot("all", results, load_history([sweep_dir]), plots_dir)
    status = print_summary(summary)
    storage_opt = "" if absolute_address(default_storage()) == root.uri \
        else f" --storage {root.uri}"
    print(f"  Parquet results : {sweep_dir}/results/  (biohash results table {name}{storage_opt})")
    print(f"  plots           : {len(plots)} PNG files in {plots_dir}/")
    print(f"  MLflow store    : {tracking}  (browse: biohash ui --mlflow-uri {tracking})")
    return status
