"""``MlflowSweepCallback``: a driver-side Tune callback that mirrors a sweep into MLflow.

Compared with Ray's ``MLflowLoggerCallback`` it nests trials under a sweep
run, batches each report into one request, keeps non-numeric values as
tags, and re-attaches to existing runs after a retry or ``Tuner.restore``
(see ``biohash.results.mlflow_log``). When the sweep ends it writes the
sweep's answer, the best configs, from the Parquet results
(``biohash.results.mlflow_best``).

Logging happens on one background thread fed by a FIFO queue, so a slow
tracking store (SQLite, a remote server) never holds up the Tune event loop
that schedules trials; ``on_experiment_end`` drains the queue.

MLflow is a convenience, the Parquet results are the record: when the
tracking server is unreachable the callback warns once, skips MLflow for a
while (``retry_after_s``) and the sweep goes on; ``backfill`` (CLI:
``biohash results sync-mlflow NAME``) later fills MLflow from Parquet.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, TypeVar

import pyarrow.fs as pafs
from ray.tune import Callback

from biohash.config import TrialConfig
from biohash.results._tune import (FINAL, epoch_metrics, trial_config, trial_error_text)
from biohash.results.mlflow_log import SweepLogger, quick_http
from biohash.results.schema import parse_history

__all__ = ["MlflowSweepCallback"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class MlflowSweepCallback(Callback):
    """Parent run per sweep, child run per trial, per-epoch metrics with ``step=epoch``.

    ``tracking_uri``: ``sqlite:///path/mlflow.db`` (one machine) or a server
    URL. ``filesystem``: the sweep storage's pyarrow filesystem, through which
    the trials' run directories (eval JSON artifacts) are read; None opens
    each run directory's address as given. Never raises into Tune.
    """

    def __init__(self, tracking_uri: str, *, sweep: str, space: str, storage: str,
                 experiment: str = "biohash", retry_after_s: float = 60.0,
                 filesystem: pafs.FileSystem | None = None) -> None:
        self.tracking_uri, self.sweep, self.space = tracking_uri, sweep, space
        self.storage, self.experiment, self.retry_after_s = str(storage), experiment, retry_after_s
        self.filesystem = filesystem
        self._logger: SweepLogger | None = None
        self._down_until: float | None = None
        self._warned = False
        self._final: set[str] = set()  # trial_ids whose final report arrived in this driver
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state: keep the settings,
        # drop the connection and the worker thread (rebuilt on first use).
        state = dict(self.__dict__)
        state.update(_logger=None, _queue=None, _thread=None, _down_until=None)
        return state

    # ------------------------------------------------------------------ worker
    def _submit(self, what: str, fn: Callable[[SweepLogger], Any]) -> None:
        if self._queue is None:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._drain, name="biohash-mlflow", daemon=True)
            self._thread.start()
        self._queue.put((what, fn))

    def _drain(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            self._call(*item)

    def _close(self) -> None:
        """Wait until everything queued has been logged (or given up on)."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self._queue = self._thread = None

    # -------------------------------------------------------------------- guard
    def _call(self, what: str, fn: Callable[[SweepLogger], T]) -> T | None:
        """Run ``fn`` against MLflow unless it is known down; swallow and warn on failure."""
        if self._down_until is not None and time.monotonic() < self._down_until:
            return None
        try:
            with quick_http():
                if self._logger is None:
                    self._logger = SweepLogger(self.tracking_uri, sweep=self.sweep,
                                               space=self.space, storage=self.storage,
                                               experiment=self.experiment,
                                               filesystem=self.filesystem)
                result = fn(self._logger)
        except Exception as exc:  # noqa: BLE001 - MLflow must never stop a sweep
            self._down_until = time.monotonic() + self.retry_after_s
            if not self._warned:
                self._warned = True
                log.warning("MLflow at %s failed (%s: %s) while logging %s; the sweep goes on "
                            "without it. Afterwards run: biohash results sync-mlflow %s "
                            "--storage %s --mlflow-uri %s", self.tracking_uri,
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "",
                            what, self.sweep, self.storage, self.tracking_uri)
            else:
                log.debug("MLflow still failing (%s): %s", what, exc)
            return None
        if self._down_until is not None:
            log.info("MLflow at %s is reachable again", self.tracking_uri)
            self._down_until = None
        return result

    # --------------------------------------------------------------- Tune hooks
    def setup(self, **info: Any) -> None:
        self._submit("the sweep run", lambda lg: lg.parent_id())

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cfg = trial_config(trial)
        if cfg is not None:
            self._submit(f"trial {cfg.trial_id}", lambda lg: lg.child(cfg, restart=True))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        cfg = trial_config(trial)
        if cfg is None:
            return
        if result.get("phase") == FINAL:
            self._final.add(cfg.trial_id)
            final = dict(result)  # Tune may reuse the dict after this hook returns
            self._submit(f"the final result of trial {cfg.trial_id}",
                         lambda lg: self._log_final(lg, cfg, final))
        elif result.get("epoch") is not None:
            metrics, epoch = epoch_metrics(result), int(result["epoch"])
            self._submit(f"epoch {epoch} of trial {cfg.trial_id}",
                         lambda lg: lg.log_epoch(cfg, epoch, metrics))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cfg = trial_config(trial)
        # Ended without a final report: stopped by a scheduler or a stop rule.
        if cfg is not None and cfg.trial_id not in self._final:
            self._submit(f"trial {cfg.trial_id}", lambda lg: lg.mark(cfg, "stopped"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cfg = trial_config(trial)
        if cfg is not None:
            error = trial_error_text(trial)
            self._submit(f"the error of trial {cfg.trial_id}",
                         lambda lg: lg.mark(cfg, "error", error))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._submit("the best configs", self._log_best)
        self._submit("the end of the sweep", lambda lg: lg.end_sweep("FINISHED"))
        self._close()

    # ------------------------------------------------------------------ helpers
    def _log_best(self, lg: SweepLogger) -> None:
        """The sweep's answer (``mlflow_best``) from the Parquet results the
        results callback has written by now (it runs first and writes at once)."""
        from biohash.errors import ResultsError
        from biohash.results.mlflow_best import log_sweep_answer
        from biohash.storage import sweep_dir

        try:
            loc = sweep_dir(self.storage, self.sweep, self.filesystem)
            answer = log_sweep_answer(lg, loc)
        except ResultsError as exc:  # no Parquet results: nothing to rank (not an MLflow fault)
            log.warning("MLflow: no best configs for sweep %s: %s", self.sweep, exc)
            return
        log.info("MLflow: %d best config metric(s) on sweep %s", len(answer.metrics), self.sweep)

    @staticmethod
    def _log_final(lg: SweepLogger, cfg: TrialConfig, result: dict) -> None:
        # Epochs missed (MLflow down, gaps) come from the complete history.
        history = {int(h["epoch"]): epoch_metrics(h) for h in parse_history(result.get("history"))
                   if h.get("epoch") is not None}
        lg.log_history(cfg, history)
        lg.log_final(cfg, result, config_json=lg.config_json(cfg))
