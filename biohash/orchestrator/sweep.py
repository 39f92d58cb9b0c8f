"""Launch, resume and inspect sweeps: a search space run as Ray Tune trials.

``run_sweep`` validates everything that can be checked before a single
trial starts (space, data, storage), claims the sweep's name by creating
``sweep.json`` exclusively (``storage.create_exclusive``: of two launches with
one name only one starts; a default name moves on to a fresh one), starts
Ray, checks resources, then runs a ``tune.Tuner`` whose trials are :func:`trial_trainable` and whose
driver-side callbacks write MLflow and Parquet. ``resume_sweep`` continues
an interrupted sweep with ``Tuner.restore`` (finished trials are not rerun,
errored ones resume from their last checkpoint); a sweep whose launch died
before Tune wrote its state is started afresh from its recorded space.

Storage given as a folder is made absolute here, on the driver, once
(``storage.absolute_address``): trials, sinks, ``sweep.json`` and the
resume hint all get that one address. A sweep stopped by SIGINT/SIGTERM or
by losing Ray returns a summary with ``interrupted`` set (see
``orchestrator.interrupt``); trials without a final report are never
counted as done. Trial and sweep states use ``storage.summary``'s words
(done / running / pending / failed / stopped).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from biohash.contract import PROGRESS_COLUMNS, TUNE_MODE
from biohash.defaults import (DATA_ROOT_ENV, STORAGE_ENV, default_data_root, default_mlflow_uri,
                              default_storage)
from biohash.errors import ResultsError, SweepError
from biohash.names import check_name
from biohash.storage import (absolute_address, create_exclusive, list_files, probe_writable,
                             read_json, resolve, sweep_dir, sweep_json)
from biohash.storage.summary import DETAIL_STATE, DONE, FAILED, PENDING, RUNNING, STATES, STOPPED

__all__ = ["SweepOptions", "SweepSummary", "run_sweep", "resume_sweep", "sweep_status",
           "list_sweep_names", "default_mlflow_uri", "default_storage", "default_data_root",
           "storage_location", "resume_command", "repair_command", "SCHEDULERS", "NOT_FINISHED",
           "DONE_STATES"]

log = logging.getLogger(__name__)

SCHEDULERS = ("fifo", "asha")
#: Final states: a trial in one of them is not run again by ``sweep resume``.
DONE_STATES = (DONE, STOPPED)
#: Run summary state of a trial with no final report when the run ends (cut
#: off, or never started): nothing runs any more, ``sweep resume`` runs it.
NOT_FINISHED = PENDING
#: Default-name launches in one second get ``-2``, ``-3``, ... up to this many tries.
_FRESH_NAME_TRIES = 100


@dataclass(frozen=True)
class SweepOptions:
    """Everything ``biohash sweep run`` accepts (see ``--help``)."""

    space: str
    name: str | None = None
    storage: str = field(default_factory=default_storage)
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    scheduler: str = "fifo"
    max_failures: int = 2
    checkpoint_interval: float = 300.0  # seconds between checkpoints sent to storage; 0 = every epoch
    data_root: str = field(default_factory=default_data_root)
    mlflow_uri: str | None = None   # None -> default_mlflow_uri(); "" -> no MLflow
    num_cpus: int | None = None     # embedded Ray only
    cluster_config: str | None = None  # node types for the launch check (default: the cluster's)
    verbose: int = 1
    extra_runtime: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise SweepError(f"bad --scheduler {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        if self.cpus_per_trial <= 0:
            raise SweepError(f"bad --cpus-per-trial {self.cpus_per_trial!r}; allowed: a number > 0")
        if self.gpus_per_trial < 0 or (0 < self.gpus_per_trial < 1 and 1 / self.gpus_per_trial % 1):
            raise SweepError(f"bad --gpus-per-trial {self.gpus_per_trial!r}; allowed: 0, a fraction "
                             f"1/n (0.5, 0.25, ...) or a whole number of GPUs")
        if self.gpus_per_trial > 1 and not float(self.gpus_per_trial).is_integer():
            raise SweepError(f"bad --gpus-per-trial {self.gpus_per_trial!r}; above 1 it must be whole")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise SweepError(f"bad --max-concurrent {self.max_concurrent!r}; allowed: an integer >= 1")
        if not math.isfinite(self.checkpoint_interval) or self.checkpoint_interval < 0:
            raise SweepError(f"bad --checkpoint-interval {self.checkpoint_interval!r}; "
                             f"allowed: seconds >= 0 (0 = every epoch)")
        if self.max_failures < 0:
            raise SweepError(f"bad --max-failures {self.max_failures!r}; allowed: an integer >= 0")
        if self.name is not None:
            check_name(self.name, "--name")


@dataclass(frozen=True)
class SweepSummary:
    """How a ``run_sweep``/``resume_sweep`` call ended.

    ``counts``: trials per state (``done``, ``stopped``, ``failed``, ``pending``;
    only states that occur); ``interrupted``: None, ``"SIGINT"``, ``"SIGTERM"`` or
    ``LOST_RAY``; ``resume``: the command that continues the sweep (set when
    interrupted or unfinished); ``missing_rows``: trial folders whose
    ``final.json`` is in storage but whose Parquet row is not (the sink's
    writes kept failing); ``repair``: the command that rebuilds those rows.
    """

    name: str
    path: str
    n_trials: int
    counts: dict[str, int]
    errors: list[str]
    interrupted: str | None = None
    resume: str | None = None
    missing_rows: tuple[str, ...] = ()
    repair: str | None = None

    @property
    def n_done(self) -> int:
        return sum(self.counts.get(s, 0) for s in DONE_STATES)

    @property
    def exit_status(self) -> int:
        """0 all done; 130/143/75 interrupted (``EXIT_STATUS``); 1 errors, unfinished
        trials or trials without their Parquet row."""
        from biohash.orchestrator.interrupt import EXIT_STATUS

        if self.interrupted:
            return EXIT_STATUS[self.interrupted]
        return 1 if self.errors or self.missing_rows or self.n_done < self.n_trials else 0


def storage_location(storage: str):
    """The storage root at its one absolute address (a ``storage.Location``)."""
    try:
        return resolve(absolute_address(storage, what="--storage"))
    except ResultsError as exc:
        raise SweepError(str(exc)) from None


def _command(parts: list[str], storage_uri: str, address: str | None = None) -> str:
    """A shell command line plus ``--storage`` / ``--address`` where they differ from the defaults."""
    import shlex

    if absolute_address(default_storage()) != storage_uri:
        parts = [*parts, "--storage", storage_uri]
    if address:
        parts = [*parts, "--address", address]
    return " ".join(shlex.quote(p) for p in parts)


def resume_command(name: str, storage_uri: str, address: str | None = None) -> str:
    """``biohash sweep resume NAME`` plus the options that differ from the defaults."""
    return _command(["biohash", "sweep", "resume", name], storage_uri, address)


def repair_command(name: str, storage_uri: str) -> str:
    """``biohash results repair NAME`` (rebuilds Parquet rows from ``final.json``)."""
    return _command(["biohash", "results", "repair", name], storage_uri)


def _check_writable(loc) -> None:
    if loc.exists() and not loc.is_dir():
        raise SweepError(f"bad --storage {loc.uri!r}: it is a file; allowed: a folder "
                         f"(created if missing) or a URI (s3://bucket/prefix)")
    try:
        probe_writable(loc)
    except OSError as exc:
        raise SweepError(f"storage {loc.uri!r} is not writable: {exc}") from None


def _sweep_info(loc) -> dict[str, Any]:
    """The sweep's ``sweep.json``; a one-line error when it is missing or damaged."""
    info = read_json(sweep_json(loc), what="sweep record")
    if info is None:
        damaged = sweep_json(loc).exists()
        raise SweepError(f"{'damaged sweep record' if damaged else 'no sweep at'} "
                         f"{(sweep_json(loc) if damaged else loc).uri!r}; list sweeps with "
                         f"'biohash sweep list'")
    return info


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    """Attach to ``address``, or start the embedded Ray: bound to 127.0.0.1, token
    auth on with a throw-away token (``orchestrator.embedded_ray`` says why and how)."""
    import ray

    from biohash.orchestrator.embedded_ray import attach_ray, start_embedded_ray

    if ray.is_initialized():
        return
    if address is None:
        start_embedded_ray(num_cpus)
    else:
        attach_ray(address)


def _param_space(trials, name: str, storage: str, opts: SweepOptions,
                 searched: bool = False) -> dict[str, Any]:
    """Tune's ``param_space``; with a searcher (``searched``) the searcher
    supplies ``trial`` for each trial and Tune merges it in."""
    from ray import tune

    from biohash.contract import TrialRuntime

    # Both addresses are absolute already (run_sweep): trials run in their own
    # working directories.
    runtime = TrialRuntime.from_dict({"data_root": opts.data_root, "storage": storage,
                                      "checkpoint_interval_s": opts.checkpoint_interval,
                                      **opts.extra_runtime}).to_dict()
    if searched:
        return {"sweep": name, "runtime": runtime}
    return {"trial": tune.grid_search([t.to_dict() for t in trials]), "sweep": name,
            "runtime": runtime}


def _tuner(trials, name: str, root, opts: SweepOptions, space):
    """``root`` is the storage root; Tune and the sinks put the sweep under ``root/name``.

    ``trials``: the space's expansion (its grid combinations when it has
    ``sample`` axes; then a ``PerCombinationSearcher`` draws each trial).
    """
    from ray import tune

    from biohash.orchestrator.resources import trial_resources
    from biohash.results import MlflowSweepCallback, ParquetResultsCallback
    from biohash.trainables import trial_dirname, trial_name, trial_trainable

    callbacks = [*_tune_loggers(), ParquetResultsCallback(root.uri, name, filesystem=root.fs)]
    if opts.mlflow_uri != "":
        callbacks.append(MlflowSweepCallback(opts.mlflow_uri or default_mlflow_uri(), sweep=name,
                                             space=space.name, storage=root.uri,
                                             filesystem=root.fs))
    scheduler = None
    if opts.scheduler == "asha":
        # max_t one past the last epoch: ASHA stops a trial that reaches max_t,
        # and a trial that survived every rung must still predict and evaluate.
        max_t = max(c.ep for t in trials for c in space.corners(t)) + 1
        scheduler = tune.schedulers.ASHAScheduler(time_attr="epoch", max_t=max_t,
                                                  grace_period=min(2, max_t - 1),
                                                  reduction_factor=3)
    trainable = tune.with_resources(trial_trainable,
                                    trial_resources(opts.cpus_per_trial, opts.gpus_per_trial))
    search = space.search
    searcher, num_samples = None, 1
    if search.sampled:
        from biohash.search_spaces.searcher import PerCombinationSearcher

        searcher = PerCombinationSearcher(trials, space.sample, search)
        num_samples = space.n_trials
    return tune.Tuner(
        trainable,
        param_space=_param_space(trials, name, root.uri, opts, searched=searcher is not None),
        tune_config=tune.TuneConfig(
            metric=search.metric, mode=TUNE_MODE, scheduler=scheduler, reuse_actors=True,
            search_alg=searcher, num_samples=num_samples,
            # --max-concurrent wins over the space's search.max_concurrent.
            max_concurrent_trials=opts.max_concurrent or search.max_concurrent,
            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=root.path, storage_filesystem=root.fs, callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=opts.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            progress_reporter=_reporter(), verbose=opts.verbose),
    )


#: ``sweep.json`` key: the sweep's RunConfig carries Tune's JSON and CSV loggers itself
#: (sweeps recorded without it rely on Tune's automatic loggers, TensorBoard's included).
EXPLICIT_LOGGERS = "tune_loggers_explicit"


def _tune_loggers() -> list[Any]:
    """Tune's JSON and CSV loggers (``result.json``, ``progress.csv``: what Tune's own
    restore and results read), without its automatic TensorBoard logger: importing
    tensorboardX cost every sweep launch ~3.5 s, and nothing in biohash reads its
    event files (the curves are in MLflow and ``results plot``)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _tune_env(explicit_loggers: bool = True) -> None:
    """Tune settings read at fit time, for a new and a resumed sweep alike.

    ``explicit_loggers``: the sweep's callbacks include ``_tune_loggers()``, so
    Tune adds none of its own (a sweep recorded before they were explicit
    keeps Tune's automatic loggers when resumed).
    """
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # One checkpoint kept per trial forces an experiment snapshot per epoch,
    # which is what resume needs; Tune's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if explicit_loggers:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    else:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)


def _reporter():
    """The table columns that matter for a hashing grid.

    Ray's newer console output ignores custom reporters, so the driver opts
    back into the classic reporter (read by ``tune.run`` at fit time).
    """
    from ray import tune

    _tune_env()
    return tune.CLIReporter(
        parameter_columns={"trial/db": "db", "trial/arch": "arch", "trial/mode": "mode",
                           "trial/nbits": "bits", "trial/loss": "loss", "trial/seed": "seed"},
        metric_columns=dict(PROGRESS_COLUMNS),
        max_report_frequency=30)


def _trial_state(result, interrupted: bool) -> str:
    """A trial's state from its last report: only a final report makes it done."""
    from biohash.results._tune import FINAL

    metrics = result.metrics or {}
    if result.error:
        return FAILED
    if metrics.get("phase") == FINAL:
        return DETAIL_STATE.get(str(metrics.get("status") or "finished"), DONE)
    # No final report: cut off by the interrupt, or (uninterrupted) stopped by a scheduler.
    return NOT_FINISHED if interrupted else STOPPED


def _stored_counts(stored, n_trials: int) -> dict[str, int]:
    """Counts read from storage (``sweep status``'s view), as run-summary states:
    after the run nothing is running, so a trial without a final record is pending."""
    counts: dict[str, int] = {}
    for trial in stored.trials.values():
        key = trial.state if trial.state in STATES and trial.state != RUNNING else NOT_FINISHED
        counts[key] = counts.get(key, 0) + 1
    missing = n_trials - sum(counts.values())
    if missing > 0:
        counts[NOT_FINISHED] = counts.get(NOT_FINISHED, 0) + missing
    return counts


def _summary(result_grid, name: str, root, n_trials: int, interrupted: str | None = None,
             address: str | None = None, stored=None) -> SweepSummary:
    """Counts from the result grid, or from storage when there is none (Ray lost);
    trials whose final report is in storage but whose Parquet row is not are named.
    ``stored``: the sweep's ``summarize_sweep`` when the caller has just read it."""
    from biohash.storage.summary import summarize_sweep

    loc = sweep_dir(root, name)
    stored = stored if stored is not None else summarize_sweep(loc)
    errors = []
    if result_grid is None:
        counts = _stored_counts(stored, n_trials)
    else:
        counts = {}
        for result in result_grid:
            state = _trial_state(result, interrupted is not None)
            counts[state] = counts.get(state, 0) + 1
            if result.error:
                errors.append(f"{result.path}: {str(result.error).splitlines()[0][:200]}")
        # Trials Tune had not created yet (it creates them lazily).
        missing = n_trials - sum(counts.values())
        if missing > 0:
            counts[NOT_FINISHED] = counts.get(NOT_FINISHED, 0) + missing
    n_trials = max(n_trials, sum(counts.values()))
    resume = None
    if interrupted or counts.get(NOT_FINISHED):
        resume = resume_command(name, root.uri, address)
    lost = tuple(stored.missing_rows)
    return SweepSummary(name, loc.uri, n_trials, counts, errors, interrupted, resume, lost,
                        repair_command(name, root.uri) if lost else None)


def _fit(tuner, stop) -> Any:
    """``tuner.fit()``; None when a second signal or a lost Ray cut it short
    (``stop.reason`` then says why)."""
    from biohash.orchestrator.interrupt import LOST_RAY, is_lost_ray

    try:
        return tuner.fit()
    except KeyboardInterrupt:
        stop.reason = stop.reason or "SIGINT"
    except Exception as exc:  # noqa: BLE001 - only a lost cluster is turned into a summary
        if not is_lost_ray(exc):
            raise
        log.error("lost the Ray cluster: %s", str(exc).splitlines()[0][:300] if str(exc) else exc)
        stop.reason = LOST_RAY
    return None


def _data_root(data_root: str) -> str:
    try:
        return absolute_address(data_root, what="--data-root")
    except ResultsError as exc:
        raise SweepError(str(exc)) from None


def _claim(root, name: str | None, default_name: str, info: dict[str, Any]):
    """Create the sweep's ``sweep.json`` exclusively; returns its folder.

    An explicit name that exists is an error (one line, with the resume
    command); the default ``<space>-<timestamp>`` name moves on to
    ``-2``, ``-3``, ... so two launches in the same second both start.
    """
    candidates = [name] if name else [default_name] + [f"{default_name}-{i}"
                                                       for i in range(2, _FRESH_NAME_TRIES + 1)]
    for candidate in candidates:
        loc = sweep_dir(root, candidate)
        data = json.dumps({**info, "name": candidate}, indent=2, sort_keys=True,
                          default=str).encode()
        try:
            # An existing folder without sweep.json (a leftover) is taken as used too.
            if not loc.exists() and create_exclusive(sweep_json(loc), data):
                return loc
        except OSError as exc:
            raise SweepError(f"cannot create {sweep_json(loc).uri!r}: {exc}") from None
    if name:
        raise SweepError(f"sweep {name!r} already exists in {root.uri!r}; continue it with "
                         f"'{resume_command(name, root.uri)}' or choose another --name")
    raise SweepError(f"no free sweep name from {default_name!r} in {root.uri!r} after "
                     f"{_FRESH_NAME_TRIES} tries; pass --name")


def _release(loc) -> None:
    """Undo ``_claim`` when the launch fails before Tune starts (nothing else is there)."""
    try:
        loc.fs.delete_file(sweep_json(loc).path)
        if not list_files(loc):
            loc.fs.delete_dir(loc.path)
    except OSError as exc:
        log.warning("could not remove %s after a failed launch: %s", loc.uri, exc)


def _prepare(opts: SweepOptions):
    """Check ``opts`` and its space before anything is written: (opts with absolute
    addresses, storage root, space, trials)."""
    from biohash.search_spaces import load_space, plan

    opts.check()
    root = storage_location(opts.storage)
    # One absolute address each, fixed before anything starts (see the module doc).
    opts = replace(opts, storage=root.uri, data_root=_data_root(opts.data_root))
    space = load_space(opts.space)
    the_plan = plan(space, data_root=opts.data_root)
    if the_plan.problems:
        raise SweepError(f"sweep {space.name!r} cannot start: " + "; ".join(the_plan.problems))
    return opts, root, space, the_plan.trials  # grid combinations when the space samples


def _sweep_record(opts: SweepOptions, root, space) -> dict[str, Any]:
    """What ``sweep.json`` records: enough to restart the sweep from nothing."""
    from biohash.results.provenance import code_version

    return {
        "space": space.name, "space_path": str(space.path or ""),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(), "code_version": code_version(),
        "storage": root.uri, "n_trials": space.n_trials, "axes": space.axes,
        "sample": {k: d.describe() for k, d in space.sample.items()},
        "search": asdict(space.search),
        "mlflow_uri": "" if opts.mlflow_uri == "" else (opts.mlflow_uri or default_mlflow_uri()),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("space", "name")},
        EXPLICIT_LOGGERS: True,
    }


def _launch(opts: SweepOptions, root, loc, space, trials, *, release: bool) -> SweepSummary:
    """Start Ray, check resources, run the trials. ``release``: remove the sweep's
    record when Ray or the resource check fails (a fresh launch; not a restart)."""
    from biohash.orchestrator.interrupt import interruptible
    from biohash.orchestrator.resources import check_satisfiable

    name = loc.name
    try:
        _init_ray(opts.address, opts.num_cpus)
        check_satisfiable(opts.cpus_per_trial, opts.gpus_per_trial, cluster_config=opts.cluster_config)
    except BaseException:
        if release:
            _release(loc)
        raise
    # Ray is up (ray.init sets its own SIGTERM handler): from here on a signal
    # ends the sweep with a summary and the command that continues it.
    with interruptible() as stop:
        grid = _fit(_tuner(trials, name, root, opts, space), stop)
        return _summary(grid, name, root, space.n_trials, stop.reason, opts.address)


def run_sweep(opts: SweepOptions) -> SweepSummary:
    """Validate, claim the name, then run every trial of ``opts.space`` as one Ray Tune experiment."""
    opts, root, space, trials = _prepare(opts)
    default_name = f"{space.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if opts.name and sweep_dir(root, opts.name).exists():  # the common case, before any write
        raise SweepError(f"sweep {opts.name!r} already exists in {root.uri!r}; continue it with "
                         f"'{resume_command(opts.name, root.uri, opts.address)}' or choose "
                         f"another --name")
    _check_writable(root)
    loc = _claim(root, opts.name, default_name, _sweep_record(opts, root, space))
    return _launch(opts, root, loc, space, trials, release=True)


def _restart(info: dict[str, Any], loc, root, *, address: str | None, num_cpus: int | None,
             data_root: str | None, cluster_config: str | None) -> SweepSummary:
    """Start afresh a sweep whose launch died before Tune wrote its state, from the
    space and options its ``sweep.json`` recorded (the record is kept)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(SweepOptions)}
    recorded = {k: v for k, v in (info.get("options") or {}).items() if k in known}
    space = info.get("space_path") or info.get("space")
    if space and info.get("space_path") and not Path(info["space_path"]).is_file():
        space = info.get("space")  # the YAML moved: a shipped space of that name, if any
    if not space:
        raise SweepError(f"sweep {loc.name!r} in {root.uri!r} has no Tune state and its record "
                         f"names no space; start it again with 'biohash sweep run'")
    overrides = {"storage": root.uri, "address": address, "num_cpus": num_cpus,
                 "cluster_config": cluster_config}
    if data_root is not None:
        overrides["data_root"] = data_root
    opts = SweepOptions(**{**recorded, **overrides, "space": str(space), "name": loc.name})
    log.warning("sweep %s has no Tune state (its launch died before the first trial): "
                "starting it afresh", loc.name)
    opts, root, space_obj, trials = _prepare(opts)
    _check_writable(root)
    return _launch(opts, root, loc, space_obj, trials, release=False)


def resume_sweep(name: str, *, storage: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, restart_errored: bool = False,
                 data_root: str | None = None, cluster_config: str | None = None) -> SweepSummary:
    """Continue an interrupted sweep: unfinished and errored trials run, done ones don't.

    Trials get the storage address resolved here (the sweep may have moved,
    or been started before storage addresses were made absolute) and, when
    ``data_root`` is given, that data root instead of the one they started with.
    A sweep without Tune state (its launch died before the first trial) is
    started afresh from its record. A damaged ``sweep.json`` does not stop a
    resume that Tune's own state allows.
    """
    from ray import tune

    from biohash.orchestrator.interrupt import interruptible
    from biohash.orchestrator.resources import check_satisfiable, trial_resources
    from biohash.storage.summary import DONE, summarize_sweep
    from biohash.trainables import trial_trainable

    root = storage_location(default_storage() if storage is None else storage)
    loc = sweep_dir(root, name)
    record = sweep_json(loc)
    info = read_json(record, what="sweep record")
    if info is None and not record.exists():
        raise SweepError(f"no sweep at {loc.uri!r}; list sweeps with 'biohash sweep list'")
    if not tune.Tuner.can_restore(loc.path, storage_filesystem=loc.fs):
        if info is None:
            raise SweepError(f"sweep {name!r} in {root.uri!r} has no Tune state and a damaged "
                             f"record {record.uri!r}; start it again with 'biohash sweep run'")
        return _restart(info, loc, root, address=address, num_cpus=num_cpus,
                        data_root=data_root, cluster_config=cluster_config)
    info = info or {}
    n_trials = int(info.get("n_trials") or 0)
    stored = summarize_sweep(loc)
    if stored.planned and stored.state == DONE:
        # Nothing to run (every planned trial has its final record, or was stopped by the
        # scheduler): no cluster is started, and none is needed, to say so.
        log.info("sweep %s: all %d trials are done; nothing to resume", name, n_trials)
        return _summary(None, name, root, n_trials, None, address, stored=stored)
    overrides = {"storage": root.uri}
    if data_root is not None:
        overrides["data_root"] = _data_root(data_root)
    _check_writable(root)
    opts = info.get("options", {})
    _init_ray(address, num_cpus)
    check_satisfiable(opts.get("cpus_per_trial", 1.0), opts.get("gpus_per_trial", 0.0),
                      cluster_config=cluster_config)
    # with_parameters keeps the trainable's name, which restore checks.
    trainable = tune.with_resources(
        tune.with_parameters(trial_trainable, runtime_overrides=overrides),
        trial_resources(opts.get("cpus_per_trial", 1.0), opts.get("gpus_per_trial", 0.0)))
    _tune_env(explicit_loggers=bool(info.get(EXPLICIT_LOGGERS)))
    with interruptible() as stop:
        tuner = tune.Tuner.restore(loc.path, trainable, resume_unfinished=True,
                                   resume_errored=not restart_errored,
                                   restart_errored=restart_errored, storage_filesystem=loc.fs)
        grid = _fit(tuner, stop)
        return _summary(grid, name, root, n_trials, stop.reason, address)


def sweep_status(name: str, *, storage: str | None = None) -> dict[str, Any]:
    """One sweep's state and trial counts per state, read from storage only (no
    cluster needed); the states are ``storage.summary``'s."""
    from biohash.storage.summary import summarize_sweep

    loc = sweep_dir(storage_location(default_storage() if storage is None else storage), name)
    _sweep_info(loc)
    return summarize_sweep(loc).as_dict()


def list_sweep_names(storage: str | None = None) -> list[dict[str, Any]]:
    """Every sweep in ``storage`` (oldest first) with its state, space, size,
    creation time and trial counts per state."""
    from biohash.storage.summary import summarize_storage

    return [s.as_dict() for s in summarize_storage(
        storage_location(default_storage() if storage is None else storage))]
