"""PNG plots of one or more sweeps (matplotlib, Agg backend; one figure per dataset).

- ``bits``: best-config metric vs code length, one line per mode (± std over seeds);
- ``gap``: mode minus bp for the same config (same base arch and
  hyperparameters), averaged over matched configs, vs code length;
- ``curves``: per-epoch validation mAP of every trial, coloured by mode;
- ``alignment``: alignment angle (mean over layers, then over trials) per mode.

Each plot function returns the files it wrote ([] when the data has nothing
to show, e.g. no bp baseline for ``gap``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from biohash.analysis.tables import best_configs, gap_table
from biohash.registry import Registry

__all__ = ["PLOTS", "plot"]

#: name -> fn(results, history, out_dir, metric) -> written paths
PLOTS: Registry[Callable[..., list[Path]]] = Registry("plot kind")


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 4), dpi=100)


def _save(plt, fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _with_mode(history: pd.DataFrame) -> pd.DataFrame:
    return history.assign(mode=history["rule"]) if "rule" in history.columns else history


@PLOTS.register("bits")
def plot_bits(results: pd.DataFrame, history: pd.DataFrame | None, out_dir: Path,
              metric: str = "score") -> list[Path]:
    best = best_configs(results, ("db", "nbits", "mode"), metric)
    paths = []
    for db, rows in best.groupby("db", sort=True):
        plt, fig, ax = _figure()
        for mode, line in rows.groupby("mode", sort=True):
            line = line.sort_values("nbits")
            ax.errorbar(line["nbits"], line[metric] * 100, yerr=line[f"{metric}_std"].fillna(0) * 100,
                        marker="o", capsize=3, label=mode)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(rows["nbits"].unique()), labels=map(str, sorted(rows["nbits"].unique())))
        paths.append(_save(plt, fig, ax, out_dir / f"bits_{db}.png", f"{db}: {metric} vs bits",
                           "bits", f"{metric} (x100)"))
    return paths


@PLOTS.register("gap")
def plot_gap(results: pd.DataFrame, history: pd.DataFrame | None, out_dir: Path,
             metric: str = "score") -> list[Path]:
    gaps = gap_table(results, metric)
    paths = []
    for db, part in gaps.groupby("db", sort=True):
        per_bits = part.pivot(index="nbits", columns="mode", values="gap").sort_index()
        plt, fig, ax = _figure()
        for mode in per_bits.columns:
            if per_bits[mode].notna().any():
                ax.plot(per_bits.index, per_bits[mode] * 100, marker="o", label=mode)
        ax.axhline(0, color="black", linewidth=0.8)
        paths.append(_save(plt, fig, ax, out_dir / f"gap_{db}.png",
                           f"{db}: {metric} gap to backprop", "bits", f"mode - bp (x100)"))
    return paths


@PLOTS.register("curves")
def plot_curves(results: pd.DataFrame, history: pd.DataFrame | None, out_dir: Path,
                metric: str = "score", key: str = "val_mAP") -> list[Path]:
    if history is None or history.empty:
        return []
    rows = _with_mode(history[history["key"] == key])
    paths = []
    for db, part in rows.groupby("db", sort=True):
        plt, fig, ax = _figure()
        colours = {m: f"C{i}" for i, m in enumerate(sorted(part["mode"].unique()))}
        for (mode, _trial), line in part.groupby(["mode", "trial_id"], sort=True):
            line = line.sort_values("epoch")
            ax.plot(line["epoch"], line["value"], color=colours[mode], alpha=0.6, linewidth=1)
        for mode, colour in colours.items():
            ax.plot([], [], color=colour, label=mode)
        paths.append(_save(plt, fig, ax, out_dir / f"curves_{db}.png",
                           f"{db}: {key} per trial", "epoch", key))
    return paths


@PLOTS.register("alignment")
def plot_alignment(results: pd.DataFrame, history: pd.DataFrame | None, out_dir: Path,
                   metric: str = "score") -> list[Path]:
    if history is None or history.empty:
        return []
    rows = _with_mode(history[history["key"].str.startswith("align/")])
    if rows.empty:
        return []
    per_trial = rows.groupby(["db", "mode", "trial_id", "epoch"])["value"].mean().reset_index()
    per_mode = per_trial.groupby(["db", "mode", "epoch"])["value"].mean().reset_index()
    paths = []
    for db, part in per_mode.groupby("db", sort=True):
        plt, fig, ax = _figure()
        for mode, line in part.groupby("mode", sort=True):
            ax.plot(line["epoch"], line["value"], marker=".", label=mode)
        paths.append(_save(plt, fig, ax, out_dir / f"alignment_{db}.png",
                           f"{db}: alignment angle (mean over layers)", "epoch", "degrees"))
    return paths


def plot(kind: str, results: pd.DataFrame, history: pd.DataFrame | None, out_dir: str | Path,
         metric: str = "score") -> list[Path]:
    """Write the PNGs of ``kind`` (a ``PLOTS`` name or ``all``) into ``out_dir``."""
    kinds = PLOTS.names() if kind == "all" else [PLOTS.check(kind)]
    out = Path(out_dir)
    return [p for name in kinds for p in PLOTS.get(name)(results, history, out, metric)]
