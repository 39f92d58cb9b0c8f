"""Best configurations, paper-style tables and sweep comparisons from result rows.

Input is the DataFrame of ``biohash.results.load_results`` (any number of
sweeps). Conventions used throughout:

- ``mode`` means the learning rule actually used (the ``rule`` column): a
  plain ``-arch alexnet`` trial is backprop whatever ``-mode`` says, so it
  is grouped as ``bp``.
- A *config* is a trial's hyperparameters without its seed and without
  the fields that do not change results (``config.NON_RESULT_FIELDS``: exp,
  nw, no_skip, soft_skip): trials that differ only
  by seed are repeats of one config, averaged before anything is ranked.
- Rows with status ``error`` have no metrics and are left out.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from biohash.config import NON_RESULT_FIELDS
from biohash.errors import ResultsError
from biohash.results.schema import CONFIG_COLUMNS

__all__ = ["CONFIG_KEY", "prepare", "config_means", "best_configs", "best_view", "gap_table",
           "paper_table", "compare"]

#: Config columns outside a config's identity: the seed (repeats of one config
#: are averaged) and the fields that do not change what a trial computes.
_NOT_IDENTITY = ("seed", *NON_RESULT_FIELDS)
#: The columns identifying a config (hyperparameters), seed excluded.
CONFIG_KEY = tuple(c for c in CONFIG_COLUMNS if c not in _NOT_IDENTITY)


def _columns(value: str | Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return list(value)


def _check(df: pd.DataFrame, names: Sequence[str], what: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        allowed = [c for c in df.columns if c != "schema_version"]
        raise ResultsError(f"unknown {what} column(s) {', '.join(map(repr, missing))}; "
                           f"allowed: {', '.join(allowed)}")


def prepare(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Rows with results, ``mode`` replaced by the rule actually used."""
    if metric is not None:
        _check(df, [metric], "metric")
        if not pd.api.types.is_numeric_dtype(df[metric]):
            raise ResultsError(f"metric {metric!r} is not numeric; choose a numeric column such "
                               "as score, query/mAP_at_5000, val/mAP")
    out = df
    if "status" in out.columns:
        out = out[out["status"] != "error"]
    if "rule" in out.columns:
        out = out.assign(mode=out["rule"])
    if metric is not None:
        out = out[out[metric].notna()]
    if out.empty:
        raise ResultsError("no finished trials with results yet"
                           + (f" for metric {metric!r}" if metric else ""))
    return out


def config_means(df: pd.DataFrame, metric: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    """One row per config (and ``extra`` columns): metric mean, std, n_seeds, trial_ids."""
    key = list(dict.fromkeys([*extra, *(c for c in CONFIG_KEY if c in df.columns)]))
    grouped = df.groupby(key, dropna=False, sort=True)
    out = grouped[metric].agg(["mean", "std", "count"]).rename(
        columns={"mean": metric, "std": f"{metric}_std", "count": "n_seeds"})
    out["trial_ids"] = grouped["trial_id"].agg(lambda s: ",".join(sorted(s)))
    return out.reset_index()


def best_configs(df: pd.DataFrame, group_by: str | Sequence[str] = ("db", "nbits", "mode"),
                 metric: str = "score", *, maximize: bool = True) -> pd.DataFrame:
    """The best config per group, ranked by its metric averaged over seeds.

    Trials differing only by seed are averaged first (``<metric>``,
    ``<metric>_std``, ``n_seeds``, ``trial_ids``); then the config with the
    best mean is kept per ``group_by`` group. Ties keep the first config
    in sorted order, so the result is deterministic.
    """
    group_by = _columns(group_by)
    _check(df, group_by, "group-by")
    rows = prepare(df, metric)
    means = config_means(rows, metric, group_by)
    order = means.sort_values(metric, ascending=not maximize, kind="stable")
    best = order.groupby(group_by, dropna=False, sort=True).head(1)
    lead = [*group_by, metric, f"{metric}_std", "n_seeds"]
    rest = [c for c in best.columns if c not in lead]
    return best[lead + rest].sort_values(group_by, kind="stable").reset_index(drop=True)


def best_view(best: pd.DataFrame) -> pd.DataFrame:
    """``best_configs``'s table as printed: the group, metric, std and ``n_seeds``
    columns, then only the config columns that differ between the winners (not
    all twenty), then ``trial_ids``."""
    lead = list(best.columns[:best.columns.get_loc("n_seeds") + 1])
    varying = [c for c in CONFIG_KEY if c in best and c not in lead and best[c].nunique() > 1]
    return best[lead + varying + ["trial_ids"]]


def gap_table(df: pd.DataFrame, metric: str = "score") -> pd.DataFrame:
    """Each rule's gap to backprop per (db, nbits): columns db, nbits, mode, gap, n_configs.

    ``gap`` is the mean over matched configs of (the rule's mean over seeds -
    bp's mean over seeds), in the metric's units; matched = same base arch and
    hyperparameters, so ``bio-alexnet -mode fa`` meets plain ``alexnet`` (bp).
    ``n_configs`` counts the matched configs. Empty when nothing has a bp match.
    """
    rows = prepare(df, metric)
    # Same config = same base arch and hyperparameters; arch/mode differ.
    key = [c for c in CONFIG_KEY if c not in ("arch", "mode") and c in rows.columns] + ["base_arch"]
    means = rows.groupby([*key, "mode"], dropna=False)[metric].mean().unstack("mode")
    columns = ["db", "nbits", "mode", "gap", "n_configs"]
    if "bp" not in means.columns or len(means.columns) < 2:
        return pd.DataFrame(columns=columns)
    gaps = means.drop(columns="bp").sub(means["bp"], axis=0).reset_index()
    long = gaps.melt(id_vars=key, var_name="mode", value_name="gap").dropna(subset=["gap"])
    out = long.groupby(["db", "nbits", "mode"], sort=True)["gap"].agg(["mean", "count"])
    return out.rename(columns={"mean": "gap", "count": "n_configs"}).reset_index()[columns]


def _cell(mean: float, std: float, scale: float, digits: int) -> str:
    if pd.isna(std):  # a single seed: no spread to report
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def paper_table(df: pd.DataFrame, rows: str | Sequence[str] = "mode",
                cols: str | Sequence[str] = ("db", "nbits"), metric: str = "score", *,
                scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """A paper-style table of "mean ± std" over seeds (x100 by default).

    Each cell is the best config of its (rows, cols) group, as papers report
    a tuned result per cell; see ``best_configs``. Empty cells are "-".
    """
    rows, cols = _columns(rows), _columns(cols)
    best = best_configs(df, [*rows, *cols], metric)
    best = best.assign(cell=[_cell(m, s, scale, digits)
                             for m, s in zip(best[metric], best[f"{metric}_std"])])
    table = best.pivot_table(index=rows, columns=cols, values="cell", aggfunc="first")
    return table.fillna("-")


def compare(df_a: pd.DataFrame, df_b: pd.DataFrame, *, metric: str = "score",
            on: Sequence[str] | None = None) -> pd.DataFrame:
    """Configs present in both result sets, with ``metric`` of each and ``diff = b - a``.

    Matched on ``on`` (default: the full config key, so seeds are averaged
    on both sides). Only key columns that vary are shown. Raises when no
    config matches.
    """
    a, b = prepare(df_a, metric), prepare(df_b, metric)
    key = list(on) if on is not None else [c for c in CONFIG_KEY if c in a.columns]
    _check(a, key, "match")
    ma = a.groupby(key, dropna=False)[metric].agg(["mean", "count"])
    mb = b.groupby(key, dropna=False)[metric].agg(["mean", "count"])
    both = ma.join(mb, how="inner", lsuffix="_a", rsuffix="_b").reset_index()
    if both.empty:
        raise ResultsError("no config appears in both result sets; nothing to compare "
                           f"(matched on {', '.join(key)})")
    varying = [c for c in key if both[c].nunique(dropna=False) > 1] or key[:1]
    out = pd.DataFrame({**{c: both[c] for c in varying},
                        f"{metric}_a": both["mean_a"], f"{metric}_b": both["mean_b"],
                        "diff": both["mean_b"] - both["mean_a"],
                        "n_a": both["count_a"], "n_b": both["count_b"]})
    return out.sort_values("diff", ascending=False, kind="stable").reset_index(drop=True)
