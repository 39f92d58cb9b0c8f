"""``SweepLogger``: one sweep's MLflow runs (parent = sweep, child = trial), idempotent.

Used live by ``MlflowSweepCallback`` and afterwards by ``backfill``. Runs are
found again by tags instead of remembered, so a new driver process (resumed
sweep) or a retried trial re-attaches to its runs rather than creating new
ones:

- parent: tags ``biohash.role=sweep``, ``biohash.sweep=<name>``;
- child: tags ``mlflow.parentRunId``, ``biohash.trial_id`` (``TrialConfig.trial_id``).

A child run is named as Tune's progress table names the trial
(``DIGITS/bio-cnn-small/fa/16b/DCH/s0``, see ``short_name``): the old
run-directory name (``-loss=DCH-nbits=32-trf=i...``) is cut by the UI before
the parts that tell trials apart, so it is kept as the tag ``biohash.run_name``.

Per-epoch metrics use ``step=epoch``. A child's tag ``biohash.last_epoch``
records the contiguous prefix of epochs logged, so re-reported epochs (a
retry from an earlier checkpoint) are not logged twice and epochs missed
while MLflow was down are filled from the final report's complete history.

Every write is one ``MlflowClient.log_batch`` (<= 1000 metrics, <= 100
params/tags per request). MLflow is imported lazily: ``import biohash`` stays light.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Iterator, Mapping

import pyarrow.fs as pafs

from biohash.config import TrialConfig
from biohash.contract import DATA_PREFIX, FINAL_NUMBERS, FINAL_TEXTS
from biohash.defaults import default_mlflow_uri, mlflow_artifact_root
from biohash.results.provenance import code_version

__all__ = ["SweepLogger", "short_name", "MAX_METRICS", "MAX_TAGS",
           "RUN_NAME_TAG"]

log = logging.getLogger(__name__)
MAX_METRICS, MAX_TAGS = 1000, 100
_MAX_TAG_CHARS = 8000
#: Tag of a child run holding the trial's old run-directory name (``TrialConfig.run_name``).
RUN_NAME_TAG = "biohash.run_name"
#: The evaluation's JSON files in a run directory (``query-prediction_mAP.json``, ...).
EVAL_SUFFIX = "-prediction_mAP.json"
#: biohash status -> MLflow run status. Early stopping is a normal end.
RUN_STATUS = {"finished": "FINISHED", "early_stopped": "FINISHED", "diverged": "FAILED",
              "error": "FAILED", "stopped": "KILLED"}
#: Fail fast on a dead server instead of MLflow's default ~4 min of retries.
_QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def quick_http() -> Iterator[None]:
    """Short MLflow HTTP retries/timeouts, unless the user set their own."""
    added = {k: v for k, v in _QUICK_HTTP.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def short_name(cfg: TrialConfig) -> str:
    """The trial's name in Tune's progress table, e.g. ``DIGITS/bio-cnn-small/fa/16b/DCH/s0``.

    Taken from ``biohash.trainables.trial_name`` (Tune's ``trial_name_creator``)
    so that the console and the MLflow UI show one name. Not unique: trials
    that differ only in other hyperparameters share it (their params differ).
    """
    from biohash.trainables import trial_name

    # trial_name reads a Tune trial's config; only ``config["trial"]`` is used.
    return trial_name(SimpleNamespace(config={"trial": cfg.to_dict()}))


def _q(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")



def _split_data_params(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """-> (metrics without ``data/*`` keys, those keys as MLflow params)."""
    values = {k: v for k, v in metrics.items() if not k.startswith(DATA_PREFIX)}
    params = {f"data.{k[len(DATA_PREFIX):]}": repr(float(v)) for k, v in metrics.items()
              if k.startswith(DATA_PREFIX)}
    return values, params


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Child:
    """What is known about one trial's run."""

    __slots__ = ("run_id", "last_epoch", "status", "name")

    def __init__(self, run_id: str, last_epoch: int = 0, status: str | None = None,
                 name: str | None = None) -> None:
        self.run_id, self.last_epoch, self.status = run_id, last_epoch, status
        self.name = name


class SweepLogger:
    """The MLflow side of one sweep. Methods raise on MLflow errors; callers decide."""

    def __init__(self, tracking_uri: str, *, sweep: str, space: str = "", storage: str = "",
                 experiment: str = "biohash", reopen: bool = True,
                 filesystem: pafs.FileSystem | None = None) -> None:
        """``reopen``: mark an existing sweep run RUNNING again (a live, resumed
        sweep) rather than leaving its status alone (a backfill). ``filesystem``:
        the sweep storage's pyarrow filesystem, used to read the run directories
        (``final["run_dir"]``) whose eval JSON become artifacts; None opens each
        run directory's address as it is (a folder or a URI)."""
        from mlflow import MlflowClient

        self.tracking_uri, self.sweep, self.space = tracking_uri, sweep, space
        self.storage, self.experiment, self.reopen = storage, experiment, reopen
        self.filesystem = filesystem
        self.created_parent = False
        self.client = MlflowClient(tracking_uri)
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        self._children: dict[str, _Child] | None = None

    # ------------------------------------------------------------- attach / create
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                self._experiment_id = self.client.create_experiment(
                    self.experiment, artifact_location=self._artifact_location())
        return self._experiment_id

    def _artifact_location(self) -> str | None:
        return mlflow_artifact_root(self.tracking_uri)

    def parent_id(self) -> str:
        """The sweep's run, found by tag or created (RUNNING)."""
        if self._parent_id is None:
            runs = self.client.search_runs(
                [self.experiment_id()], order_by=["attributes.start_time ASC"], max_results=1,
                filter_string=f"tags.`biohash.role` = 'sweep' AND "
                              f"tags.`biohash.sweep` = '{_q(self.sweep)}'")
            tags = {"biohash.role": "sweep", "biohash.sweep": self.sweep,
                    "biohash.space": self.space, "biohash.storage": self.storage,
                    "biohash.code_version": code_version()}
            if runs:
                self._parent_id = runs[0].info.run_id
                if self.reopen:
                    self.client.update_run(self._parent_id, status="RUNNING")
                self._log(self._parent_id, tags=tags)
            else:
                self._parent_id = self.client.create_run(
                    self.experiment_id(), run_name=self.sweep, tags=tags).info.run_id
                self.created_parent = True
        return self._parent_id

    def children(self) -> dict[str, _Child]:
        """trial_id -> child run, loaded once from the tracking store."""
        if self._children is None:
            parent = self.parent_id()
            found: dict[str, _Child] = {}
            token = None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id()], max_results=1000, page_token=token,
                    filter_string=f"tags.mlflow.parentRunId = '{parent}'")
                for run in page:
                    tags = run.data.tags
                    if "biohash.trial_id" in tags and tags["biohash.trial_id"] not in found:
                        found[tags["biohash.trial_id"]] = _Child(
                            run.info.run_id, int(tags.get("biohash.last_epoch", 0)),
                            tags.get("biohash.status"), run.info.run_name)
                token = page.token
                if not token:
                    break
            self._children = found
        return self._children

    def child(self, cfg: TrialConfig, *, restart: bool = False) -> _Child:
        """The trial's run, created with its params on first sight.

        ``restart``: the trial runs again (retry, resumed sweep), so a run
        that had ended is marked RUNNING again.
        """
        known = self.children().get(cfg.trial_id)
        if known is None:
            name = short_name(cfg)
            run = self.client.create_run(
                self.experiment_id(), run_name=name,
                tags={"mlflow.parentRunId": self.parent_id(), "biohash.role": "trial",
                      "biohash.sweep": self.sweep, "biohash.trial_id": cfg.trial_id,
                      "biohash.status": "running", RUN_NAME_TAG: cfg.run_name})
            known = self.children()[cfg.trial_id] = _Child(run.info.run_id, 0, "running", name)
            self._log(known.run_id, params={k: str(v) for k, v in cfg.to_dict().items()})
        elif restart and known.status not in (None, "running"):
            self.client.update_run(known.run_id, status="RUNNING")
            self._log(known.run_id, tags={"biohash.status": "running"})
            known.status = "running"
        return known

    def ensure_name(self, cfg: TrialConfig) -> bool:
        """Give a run created under the old long name its short name (and the
        ``biohash.run_name`` tag); True when it was renamed."""
        child, name = self.child(cfg), short_name(cfg)
        if child.name == name:
            return False
        self.client.update_run(child.run_id, name=name)
        self._log(child.run_id, tags={RUN_NAME_TAG: cfg.run_name})
        child.name = name
        return True

    # ------------------------------------------------------------------- logging
    def _log(self, run_id: str, *, metrics: Iterable[tuple[str, float, int]] = (),
             params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None) -> None:
        """Everything in as few ``log_batch`` requests as the limits allow."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_list = [Metric(k, v, now, step) for k, v, step in metrics]
        param_list = [Param(k, v[:6000]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)[:_MAX_TAG_CHARS]) for k, v in (tags or {}).items()]
        # Params/tags in the first batches, metrics up to 1000 per batch.
        first = True
        while first or metric_list or param_list or tag_list:
            first = False
            self.client.log_batch(run_id, metrics=metric_list[:MAX_METRICS],
                                  params=param_list[:MAX_TAGS], tags=tag_list[:MAX_TAGS],
                                  synchronous=True)
            metric_list, param_list = metric_list[MAX_METRICS:], param_list[MAX_TAGS:]
            tag_list = tag_list[MAX_TAGS:]

    def log_epoch(self, cfg: TrialConfig, epoch: int, metrics: Mapping[str, float]) -> bool:
        """One epoch's metrics (one batch); False when skipped as repeated or after a gap."""
        child = self.child(cfg)
        if epoch != child.last_epoch + 1:
            return False
        values, params = _split_data_params(metrics)
        self._log(child.run_id, metrics=[(k, v, epoch) for k, v in values.items()],
                  params=params, tags={"biohash.last_epoch": str(epoch)})
        child.last_epoch = epoch
        return True

    def log_history(self, cfg: TrialConfig, history: Mapping[int, Mapping[str, float]]) -> int:
        """Epochs of ``history`` ({epoch: metrics}) not logged yet; returns how many."""
        child = self.child(cfg)
        todo = [(e, m) for e, m in sorted(history.items()) if e > child.last_epoch]
        if not todo:
            return 0
        points, params = [], {}
        for e, m in todo:
            values, found = _split_data_params(m)
            points += [(k, v, e) for k, v in values.items()]
            params.update(found)
        self._log(child.run_id, metrics=points, params=params,
                  tags={"biohash.last_epoch": str(todo[-1][0])})
        child.last_epoch = todo[-1][0]
        return len(todo)

    def log_final(self, cfg: TrialConfig, final: Mapping[str, Any], *,
                  config_json: Mapping[str, Any] | None = None) -> None:
        """Final metrics, non-numeric values as tags, artifacts, run status."""
        child = self.child(cfg)
        status = str(final.get("status") or "finished")
        step = int(final.get("epochs_run") or child.last_epoch or 0)
        metrics = [(k, float(final[k]), step) for k in FINAL_NUMBERS
                   if isinstance(final.get(k), (int, float)) and not isinstance(final[k], bool)]
        tags = {k: str(final[k]) for k in FINAL_TEXTS if final.get(k) not in (None, "")}
        tags["biohash.status"] = status
        if final.get("error"):
            tags["biohash.error"] = str(final["error"])
        self._log(child.run_id, metrics=metrics, tags=tags)
        self._log_artifacts(child.run_id, cfg, final.get("run_dir"), config_json)
        self.client.set_terminated(child.run_id, status=RUN_STATUS.get(status, "FINISHED"))
        child.status = status

    def mark(self, cfg: TrialConfig, status: str, error: str | None = None) -> None:
        """End a trial's run without results: ``error`` (FAILED) or ``stopped`` (KILLED)."""
        child = self.child(cfg)
        tags = {"biohash.status": status, **({"biohash.error": error} if error else {})}
        self._log(child.run_id, tags=tags)
        self._log_artifacts(child.run_id, cfg, None, None)
        self.client.set_terminated(child.run_id, status=RUN_STATUS[status])
        child.status = status

    def _log_artifacts(self, run_id: str, cfg: TrialConfig, run_dir: Any,
                       config_json: Mapping[str, Any] | None) -> None:
        self.client.log_dict(run_id, dict(config_json or {"trial": cfg.to_dict()}),
                             "trial_config.json")
        if not run_dir:
            return
        with tempfile.TemporaryDirectory(prefix="biohash-eval-") as tmp:
            for name, data in self._eval_files(str(run_dir)):
                local = Path(tmp) / name
                local.write_bytes(data)
                self.client.log_artifact(run_id, str(local), "eval")

    def _eval_files(self, run_dir: str) -> list[tuple[str, bytes]]:
        """``(name, bytes)`` of the run directory's eval JSON, read through the
        storage layer: the run directory is wherever the sweep storage is (a
        local folder, ``s3://...``), not necessarily on this machine's disk."""
        from biohash.errors import ResultsError
        from biohash.storage import list_files, resolve

        try:
            loc = resolve(run_dir, self.filesystem)
            out = []
            for info in list_files(loc):
                if info.type == pafs.FileType.File and info.base_name.endswith(EVAL_SUFFIX):
                    with loc.fs.open_input_stream(info.path) as fh:
                        out.append((info.base_name, fh.readall()))
            return out
        except (OSError, ResultsError) as exc:
            # The run's results are in Parquet either way; only the copy is missing.
            log.warning("MLflow: cannot read the eval files of %s: %s", run_dir, exc)
            return []

    def log_sweep_metrics(self, metrics: Mapping[str, float]) -> None:
        """Metrics of the sweep's run itself (``step=0``; a later write wins)."""
        self._log(self.parent_id(), metrics=[(k, float(v), 0) for k, v in sorted(metrics.items())])

    def end_sweep(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id(), status=status)

    def config_json(self, cfg: TrialConfig) -> dict[str, Any]:
        return {"sweep": self.sweep, "trial_id": cfg.trial_id, "trial": cfg.to_dict()}
