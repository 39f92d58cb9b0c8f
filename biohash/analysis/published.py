"""h2q's published numbers, and a sweep's results beside them (``results table --vs-published``).

``published_table()`` loads the shipped table (``published.csv``: h2q paper,
arXiv:2311.04207, VGG16, backprop; mAP@1000 x 100 for ImageNet, mAP@5000 x
100 otherwise, i.e. biohash's trial ``score`` x 100). ``vs_published(df)``
puts a sweep's mean ± std over seeds beside every published cell it has.

Which trials stand for a published method. h2q built its table in
``notebooks/generate_tables_and_figures.ipynb`` (``get_configuration`` and
its HyP2 filter); the same rules here, on every trial with base arch
``vgg16``, no ``L2_penalty`` and no ``HSWD_penalty``:

- ``HashNet``: loss HashNet.
- ``HyP2 (λ=0)``: loss HyP2 with ``-penalty`` 1.25 (0.75 on NUS_WIDE). The
  paper's λ is a quantization weight, and HyP2 has none; HyP2's ``-penalty``
  weighs its pair term (0 would drop it), and the notebook keeps only these
  values of the grid's four.
- ``DPSH (+λ)``: loss DPSH with ``-penalty`` > 0 and without ``-no_cube``.

Plain ``vgg16`` trials are the published backprop runs; ``bio-vgg16`` trials
get rows of their own, labelled by arch and rule and compared with the same
backprop number (how far a rule is from backprop).

Selection: when several configs fall in one row and cell (DPSH's three λ,
or any other hyperparameter a sweep varies), the table shows the config with
the best mean *val* mAP@k (the val fold, same k), as h2q's notebook chose
DPSH's λ; never the query score, which is the number being reported. Ties
keep the first config in sorted order.
"""
from __future__ import annotations

import csv
import functools
from importlib import resources

import pandas as pd

from biohash.config import base_arch
from biohash.errors import ResultsError
from biohash.metrics import headline_key, metric_name
from biohash.analysis.tables import CONFIG_KEY, _cell, _check, prepare

__all__ = ["PUBLISHED_FILE", "METHODS", "PUBLISHED_ARCH", "HYP2_PAIR_WEIGHT", "published_table",
           "published_method", "vs_published", "format_vs_published"]

PUBLISHED_FILE = "published.csv"
#: The published rows, in the paper's order.
METHODS = ("HashNet", "HyP2 (λ=0)", "DPSH (+λ)")
#: The backbone of the published numbers (any ``bio-`` wrapper of it is compared too).
PUBLISHED_ARCH = "vgg16"
#: HyP2's ``-penalty`` in h2q's table, per dataset (the notebook's ``pass_HyP2``).
HYP2_PAIR_WEIGHT = {"CIFAR_10": 1.25, "NUS_WIDE": 0.75, "MS_COCO": 1.25, "ImageNet": 1.25}
#: One row per (this, db, nbits) cell.
_ROW = ("method", "arch", "mode", "bio_scope")


@functools.cache
def _published_rows() -> tuple[tuple[str, str, int, str, float], ...]:
    text = resources.files(__package__).joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((r["method"], r["db"], int(r["nbits"]), r["metric"], float(r["value"]))
                 for r in csv.DictReader(lines))


def published_table() -> pd.DataFrame:
    """The published numbers: columns method, db, nbits, metric, value (mAP@k x 100)."""
    return pd.DataFrame(list(_published_rows()),
                        columns=["method", "db", "nbits", "metric", "value"])


def published_method(df: pd.DataFrame) -> pd.Series:
    """The published method each result row stands for (module docstring), or None."""
    _check(df, ["arch", "loss", "db", "penalty", "no_cube", "L2_penalty", "HSWD_penalty"],
           "config")
    eligible = ((df["arch"].map(base_arch) == PUBLISHED_ARCH)
                & (df["L2_penalty"] == 0) & (df["HSWD_penalty"] == 0))
    hyp2_weight = df["db"].map(HYP2_PAIR_WEIGHT)
    rules = {
        "HashNet": df["loss"] == "HashNet",
        "HyP2 (λ=0)": (df["loss"] == "HyP2") & (df["penalty"] == hyp2_weight),
        "DPSH (+λ)": (df["loss"] == "DPSH") & (df["penalty"] > 0) & ~df["no_cube"].astype(bool),
    }
    out = pd.Series(None, index=df.index, dtype=object)
    for method, matches in rules.items():
        out[eligible & matches] = method
    return out


def _val_score(df: pd.DataFrame) -> pd.Series:
    """Each row's val-fold mAP@k with the k of its dataset's ``score``."""
    columns = {db: f"val/{metric_name(headline_key(db))}" for db in df["db"].unique()}
    _check(df, sorted(set(columns.values())), "metric")
    out = pd.Series(float("nan"), index=df.index)
    for db, column in columns.items():
        mask = df["db"] == db
        out[mask] = df.loc[mask, column]
    return out


def vs_published(df: pd.DataFrame) -> pd.DataFrame:
    """Every published cell the results have, with the results' numbers beside it.

    One row per (method, arch, rule, bio_scope, db, nbits), all x 100:
    ``mean``/``std`` of ``score`` over seeds, ``published``, ``diff`` (mean -
    published), ``n_seeds``, the chosen config's ``penalty`` and its mean
    ``val`` mAP (the selection criterion), and ``trial_ids``. Raises
    ``ResultsError`` when no finished trial stands for a published cell.
    """
    rows = prepare(df, "score")
    rows = rows.assign(method=published_method(rows), _val=_val_score(rows))
    published = published_table()
    rows = rows.merge(published[["method", "db", "nbits", "value"]],
                      on=["method", "db", "nbits"], how="inner")
    if rows.empty:
        raise ResultsError(
            f"no finished trial stands for a published cell: they need arch {PUBLISHED_ARCH} "
            f"or bio-{PUBLISHED_ARCH}, loss HashNet, HyP2 (-penalty 1.25; NUS_WIDE 0.75) or "
            f"DPSH (-penalty > 0, no -no_cube), no L2/HSWD penalty, a db of "
            f"{', '.join(published['db'].unique())} and nbits 16/32/48/64 (space h2q-table)")
    cell = [*_ROW, "db", "nbits"]
    key = [*cell, *(c for c in CONFIG_KEY if c in rows.columns and c not in cell)]
    grouped = rows.groupby(key, dropna=False, sort=True)
    configs = grouped.agg(mean=("score", "mean"), std=("score", "std"),
                          n_seeds=("score", "count"), val=("_val", "mean"),
                          published=("value", "first")).reset_index()
    configs["trial_ids"] = grouped["trial_id"].agg(lambda s: ",".join(sorted(s))).values
    best = (configs.sort_values("val", ascending=False, kind="stable", na_position="last")
            .groupby(cell, dropna=False, sort=False).head(1))
    for column in ("mean", "std", "val"):
        best[column] = best[column] * 100
    best["diff"] = best["mean"] - best["published"]
    out = best.rename(columns={"mode": "rule"})[
        ["method", "arch", "rule", "bio_scope", "db", "nbits", "mean", "std", "published",
         "diff", "n_seeds", "penalty", "val", "trial_ids"]]
    return _ordered(out, list(published["db"].unique()))


def _ordered(table: pd.DataFrame, dbs: list[str]) -> pd.DataFrame:
    """Paper order: methods as published, plain arch before bio-, bp first, dbs as published."""
    order = pd.DataFrame({
        "m": table["method"].map(METHODS.index), "bio": table["arch"].str.startswith("bio-"),
        "bp": table["rule"] != "bp", "rule": table["rule"], "scope": table["bio_scope"],
        "d": table["db"].map(dbs.index), "n": table["nbits"]})
    index = order.sort_values(list(order.columns), kind="stable").index
    return table.loc[index].reset_index(drop=True)


def format_vs_published(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """``vs_published``'s table as printed: "mean ± std", signed diff, rounded.

    The ``bio_scope`` column is dropped when every row trains the whole
    network (``all``), as the published runs do.
    """
    out = pd.DataFrame({
        "method": table["method"], "arch": table["arch"], "rule": table["rule"],
        "bio_scope": table["bio_scope"], "db": table["db"], "nbits": table["nbits"],
        "ours": [_cell(m, s, 1.0, digits) for m, s in zip(table["mean"], table["std"])],
        "published": [f"{v:.{digits}f}" for v in table["published"]],
        "diff": [f"{round(d, digits) + 0.0:+.{digits}f}" for d in table["diff"]],  # no "-0.0"
        "n_seeds": table["n_seeds"], "penalty": table["penalty"],
        "val": [f"{v:.{digits}f}" if pd.notna(v) else "" for v in table["val"]]})
    if (out["bio_scope"] == "all").all():
        out = out.drop(columns="bio_scope")
    return out
