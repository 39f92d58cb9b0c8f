"""A sweep's answer in MLflow: the best configs on the sweep's run, their trial runs tagged.

Written when a sweep ends (``MlflowSweepCallback``) and on every
``biohash results sync-mlflow`` (``backfill``), always from the sweep's
Parquet results (the record), with ``biohash.analysis`` doing the analysis:

- parent-run metrics ``best/<db>/<nbits>/<rule>/score``: the ``score`` of
  the best config of each (db, nbits, rule) group, averaged over its seeds
  (``best_configs`` grouped by db, nbits, mode; mode = the rule actually used);
- parent-run artifacts: ``best.md``/``best.csv`` (``best_view``),
  ``gap.md``/``gap.csv`` (``gap_table``: each rule minus bp, x100), and
  ``vs_published.md``/``.csv`` where the sweep has cells of h2q's published
  table (``biohash.analysis.published``), and ``plots/*.png`` (``plot``);
- the trial runs of the best configs (every seed) carry the tag
  ``biohash.best = true``; a run whose config stopped being best loses the
  tag on the next write, so the UI filter ``BEST_FILTER`` lists exactly them.

A metric of a group that no longer exists (all its trials errored since)
stays on the parent run: MLflow cannot delete a metric.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from biohash.errors import ResultsError
from biohash.results.mlflow_log import SweepLogger

if TYPE_CHECKING:
    import pandas as pd

    from biohash.storage import Location

__all__ = ["BEST_TAG", "BEST_FILTER", "GROUP_BY", "METRIC", "Answer", "best_metric_key",
           "sweep_answer", "log_answer", "log_sweep_answer"]

log = logging.getLogger(__name__)
BEST_TAG = "biohash.best"
#: The MLflow search filter (UI search box or ``search_runs``) listing the best runs.
BEST_FILTER = f'tags.{BEST_TAG} = "true"'
#: One best config per (dataset, code length, learning rule actually used).
GROUP_BY = ("db", "nbits", "mode")
#: The papers' headline metric (mAP@1000 on ImageNet, mAP@5000 otherwise).
METRIC = "score"


def best_metric_key(db: str, nbits: int, rule: str) -> str:
    """``best/<db>/<nbits>/<rule>/score``, the parent-run metric of one group."""
    return f"best/{db}/{int(nbits)}/{rule}/{METRIC}"


@dataclass
class Answer:
    """What goes to MLflow: parent metrics, best trial ids, artifact files (relative path -> bytes)."""

    metrics: dict[str, float] = field(default_factory=dict)
    best_trials: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)


def _tables(name: str, table: pd.DataFrame) -> dict[str, bytes]:
    from biohash.analysis.formats import render

    return {f"{name}.{ext}": render(table, fmt).encode() for ext, fmt in
            (("md", "markdown"), ("csv", "csv"))}


def _plots(results: pd.DataFrame, history: pd.DataFrame | None) -> dict[str, bytes]:
    from biohash.analysis.plots import plot

    with tempfile.TemporaryDirectory(prefix="biohash-plots-") as tmp:
        return {f"plots/{p.name}": p.read_bytes()
                for p in plot("all", results, history, Path(tmp), METRIC)}


def sweep_answer(results: pd.DataFrame, history: pd.DataFrame | None = None) -> Answer:
    """The answer of ``results`` (``load_results`` rows of one sweep); empty when no
    trial has finished with a score. Pure: reads and writes nothing."""
    from biohash.analysis.published import format_vs_published, vs_published
    from biohash.analysis.tables import best_configs, best_view, gap_table

    try:
        best = best_configs(results, GROUP_BY, METRIC)
    except ResultsError:  # nothing finished yet: no answer, and no run is best
        return Answer()
    answer = Answer(
        metrics={best_metric_key(r.db, r.nbits, r.mode): float(getattr(r, METRIC))
                 for r in best.itertuples(index=False)},
        best_trials={t for ids in best["trial_ids"] for t in ids.split(",")})
    answer.files.update(_tables("best", best_view(best)))
    gaps = gap_table(results, METRIC)
    if not gaps.empty:
        answer.files.update(_tables("gap", gaps.assign(gap=gaps["gap"] * 100)
                                    .rename(columns={"gap": "gap (x100)"})))
    try:
        answer.files.update(_tables("vs_published", format_vs_published(vs_published(results))))
    except ResultsError:
        pass  # no trial stands for a published cell: the table would be empty
    answer.files.update(_plots(results, history))
    return answer


def log_answer(logger: SweepLogger, answer: Answer) -> None:
    """Write ``answer`` on the sweep's run and move the best tag to exactly its trials."""
    parent = logger.parent_id()
    if answer.metrics:
        logger.log_sweep_metrics(answer.metrics)
    if answer.files:
        with tempfile.TemporaryDirectory(prefix="biohash-best-") as tmp:
            for rel, data in answer.files.items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_bytes(data)
            logger.client.log_artifacts(parent, tmp)
    _retag(logger, answer.best_trials)


def _retag(logger: SweepLogger, best_trials: set[str]) -> None:
    children = logger.children()
    tagged = logger.client.search_runs(
        [logger.experiment_id()], max_results=1000,
        filter_string=f"tags.mlflow.parentRunId = '{logger.parent_id()}' AND {BEST_FILTER}")
    best_runs = {children[t].run_id for t in best_trials if t in children}
    for run in tagged:
        if run.info.run_id not in best_runs:
            logger.client.delete_tag(run.info.run_id, BEST_TAG)
    already = {run.info.run_id for run in tagged}
    for run_id in sorted(best_runs - already):
        logger.client.set_tag(run_id, BEST_TAG, "true")
    missing = sorted(best_trials - set(children))
    if missing:  # e.g. MLflow was down while they ran: sync-mlflow creates them
        log.warning("MLflow: %d best trial(s) have no run to tag yet (%s); run biohash results "
                    "sync-mlflow %s", len(missing), ", ".join(missing[:3]), logger.sweep)


def log_sweep_answer(logger: SweepLogger, sweep: Location) -> Answer:
    """Read the sweep's Parquet results at ``sweep`` and write their answer (``log_answer``).

    Raises ``ResultsError`` when the sweep has no results at all.
    """
    from biohash.results.reader import load_history, load_results

    results = load_results([sweep])
    try:
        history = load_history([sweep])
    except ResultsError:  # no history files: the per-epoch plots are left out
        history = None
    answer = sweep_answer(results, history)
    log_answer(logger, answer)
    return answer
