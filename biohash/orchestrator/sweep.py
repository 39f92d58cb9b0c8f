"""Launch, resume and inspect sweeps: a search space run as Ray Tune trials.

``run_sweep`` validates everything that can be checked before a single
trial starts (space, data, storage, resources), writes ``sweep.json``,
then runs a ``tune.Tuner`` whose trials are :func:`trial_trainable` and whose
driver-side callbacks write MLflow and Parquet. ``resume_sweep`` continues
an interrupted sweep with ``Tuner.restore`` (finished trials are not rerun,
errored ones resume from their last checkpoint).

Storage given as a folder is made absolute here, on the driver, once
(``results.store.absolute_address``): trials, sinks, ``sweep.json`` and the
resume hint all get that one address. A sweep stopped by SIGINT/SIGTERM or
by losing Ray returns a summary with ``interrupted`` set (see
``orchestrator.interrupt``); trials without a final report are never
counted as finished.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from biohash.defaults import DATA_ROOT_ENV, STORAGE_ENV, default_data_root, default_storage
from biohash.errors import SweepError

__all__ = ["SweepOptions", "SweepSummary", "run_sweep", "resume_sweep", "sweep_status",
           "list_sweep_names", "default_mlflow_uri", "default_storage", "default_data_root",
           "storage_location", "resume_command", "SCHEDULERS", "NOT_FINISHED", "DONE_STATES"]

log = logging.getLogger(__name__)

SCHEDULERS = ("fifo", "asha")
SWEEP_FILE = "sweep.json"
#: Final states: a trial in one of them is not run again by ``sweep resume``.
DONE_STATES = ("finished", "early_stopped", "diverged", "stopped")
#: Run summary word for a trial with no final state yet (started or pending).
NOT_FINISHED = "not finished"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def default_mlflow_uri() -> str:
    """The embedded tracking store: ``mlflow.db`` in the working directory."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


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
        if self.checkpoint_interval < 0:
            raise SweepError(f"bad --checkpoint-interval {self.checkpoint_interval!r}; "
                             f"allowed: seconds >= 0 (0 = every epoch)")
        if self.max_failures < 0:
            raise SweepError(f"bad --max-failures {self.max_failures!r}; allowed: an integer >= 0")
        if self.name is not None and not _NAME.match(self.name):
            raise SweepError(f"bad --name {self.name!r}; allowed: letters, digits, '.', '_', '-' "
                             f"(up to 100, starting with a letter or digit)")


@dataclass(frozen=True)
class SweepSummary:
    """How a ``run_sweep``/``resume_sweep`` call ended.

    ``counts``: trials per state (``DONE_STATES``, ``errored``, ``NOT_FINISHED``);
    ``interrupted``: None, ``"SIGINT"``, ``"SIGTERM"`` or ``LOST_RAY``;
    ``resume``: the command that continues the sweep (set when interrupted).
    """

    name: str
    path: str
    n_trials: int
    counts: dict[str, int]
    errors: list[str]
    interrupted: str | None = None
    resume: str | None = None

    @property
    def n_done(self) -> int:
        return sum(self.counts.get(s, 0) for s in DONE_STATES)

    @property
    def exit_status(self) -> int:
        """0 all done; 130/143/75 interrupted (``EXIT_STATUS``); 1 errors or unfinished trials."""
        from biohash.orchestrator.interrupt import EXIT_STATUS

        if self.interrupted:
            return EXIT_STATUS[self.interrupted]
        return 1 if self.errors or self.n_done < self.n_trials else 0


def storage_location(storage: str):
    """The storage root at its one absolute address (a ``results.store.Location``)."""
    from biohash.errors import ResultsError
    from biohash.results.store import absolute_address, resolve

    try:
        return resolve(absolute_address(storage, what="--storage"))
    except ResultsError as exc:
        raise SweepError(str(exc)) from None


def resume_command(name: str, storage_uri: str, address: str | None = None) -> str:
    """``biohash sweep resume NAME`` plus the options that differ from the defaults."""
    import shlex

    from biohash.results.store import absolute_address

    parts = ["biohash", "sweep", "resume", name]
    if absolute_address(default_storage()) != storage_uri:
        parts += ["--storage", storage_uri]
    if address:
        parts += ["--address", address]
    return " ".join(shlex.quote(p) for p in parts)


def _check_writable(loc) -> None:
    if loc.exists() and not loc.is_dir():
        raise SweepError(f"bad --storage {loc.uri!r}: it is a file; allowed: a folder "
                         f"(created if missing) or a URI (s3://bucket/prefix)")
    probe = loc.join(f".biohash-write-probe-{os.getpid()}")
    try:
        loc.fs.create_dir(loc.path, recursive=True)
        with loc.fs.open_output_stream(probe.path) as fh:
            fh.write(b"ok")
        loc.fs.delete_file(probe.path)
    except OSError as exc:
        raise SweepError(f"storage {loc.uri!r} is not writable: {exc}") from None


def _code_version() -> str:
    import biohash

    return getattr(biohash, "__version__", "unknown")


def _write_sweep_json(loc, info: dict[str, Any]) -> None:
    from biohash.results.store import write_bytes

    write_bytes(loc.join(SWEEP_FILE), json.dumps(info, indent=2, sort_keys=True, default=str).encode())


def _sweep_info(loc) -> dict[str, Any]:
    from biohash.results.store import read_sweep_json

    info = read_sweep_json(loc)
    if not info:
        raise SweepError(f"no sweep at {loc.uri!r}; list sweeps with 'biohash sweep list'")
    return info


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address is None:
        # An embedded single-user Ray needs no token. Explicit address="local":
        # never attach by accident to a stale cluster recorded in
        # /tmp/ray/ray_current_cluster (see the Ray facts).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)


def _param_space(trials, name: str, storage: str, opts: SweepOptions,
                 searched: bool = False) -> dict[str, Any]:
    """Tune's ``param_space``; with a searcher (``searched``) the searcher
    supplies ``trial`` for each trial and Tune merges it in."""
    from ray import tune

    from biohash.trainables import CHECKPOINT_INTERVAL

    # Both addresses are absolute already (run_sweep): trials run in their own
    # working directories.
    runtime = {"data_root": opts.data_root, "storage": storage,
               CHECKPOINT_INTERVAL: opts.checkpoint_interval, **opts.extra_runtime}
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

    callbacks = [ParquetResultsCallback(root.uri, name, filesystem=root.fs)]
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
            metric=search.metric, mode="max", scheduler=scheduler, reuse_actors=True,
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


def _tune_env() -> None:
    """Tune settings read at fit time, for a new and a resumed sweep alike."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # One checkpoint kept per trial forces an experiment snapshot per epoch,
    # which is what resume needs; Tune's warning about it is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


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
        metric_columns={"epoch": "epoch", "val_mAP": "val mAP", "score": "score"},
        max_report_frequency=30)


def _trial_state(result, interrupted: bool) -> str:
    """A trial's state from its last report: only a final report makes it done."""
    from biohash.results._tune import FINAL

    metrics = result.metrics or {}
    if result.error:
        return "errored"
    if metrics.get("phase") == FINAL:
        return str(metrics.get("status") or "finished")
    # No final report: stopped by the interrupt, or (uninterrupted) by a scheduler.
    return NOT_FINISHED if interrupted else "stopped"


def _stored_counts(loc, n_trials: int) -> dict[str, int]:
    """Counts read from storage (``sweep status``'s view), as run-summary states."""
    from biohash.orchestrator.state import trial_states

    counts: dict[str, int] = {}
    for state in trial_states(loc).values():
        key = state if state in DONE_STATES or state == "errored" else NOT_FINISHED
        counts[key] = counts.get(key, 0) + 1
    missing = n_trials - sum(counts.values())
    if missing > 0:
        counts[NOT_FINISHED] = counts.get(NOT_FINISHED, 0) + missing
    return counts


def _summary(result_grid, name: str, root, n_trials: int, interrupted: str | None = None,
             address: str | None = None) -> SweepSummary:
    """Counts from the result grid, or from storage when there is none (Ray lost)."""
    loc = root.join(name)
    errors = []
    if result_grid is None:
        counts = _stored_counts(loc, n_trials)
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
    resume = None
    if interrupted or counts.get(NOT_FINISHED):
        resume = resume_command(name, root.uri, address)
    return SweepSummary(name, loc.uri, n_trials, counts, errors, interrupted, resume)


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
    from biohash.errors import ResultsError
    from biohash.results.store import absolute_address

    try:
        return absolute_address(data_root, what="--data-root")
    except ResultsError as exc:
        raise SweepError(str(exc)) from None


def run_sweep(opts: SweepOptions) -> SweepSummary:
    """Validate, then run every trial of ``opts.space`` as one Ray Tune experiment."""
    from biohash.orchestrator.interrupt import interruptible
    from biohash.search_spaces import load_space, plan

    opts.check()
    root = storage_location(opts.storage)
    # One absolute address each, fixed before anything starts (see the module doc).
    opts = replace(opts, storage=root.uri, data_root=_data_root(opts.data_root))
    space = load_space(opts.space)
    the_plan = plan(space, data_root=opts.data_root)
    if the_plan.problems:
        raise SweepError(f"sweep {space.name!r} cannot start: " + "; ".join(the_plan.problems))
    trials = the_plan.trials  # grid combinations when the space samples
    name = opts.name or f"{space.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    loc = root.join(name)
    if loc.exists():
        raise SweepError(f"sweep {name!r} already exists in {root.uri!r}; continue it with "
                         f"'{resume_command(name, root.uri, opts.address)}' or choose another "
                         f"--name")
    _check_writable(root)
    from biohash.orchestrator.resources import check_satisfiable

    _init_ray(opts.address, opts.num_cpus)
    check_satisfiable(opts.cpus_per_trial, opts.gpus_per_trial, cluster_config=opts.cluster_config)
    _write_sweep_json(loc, {
        "name": name, "space": space.name, "space_path": str(space.path or ""),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(), "code_version": _code_version(),
        "storage": root.uri, "n_trials": space.n_trials, "axes": space.axes,
        "sample": {k: d.describe() for k, d in space.sample.items()},
        "search": asdict(space.search),
        "mlflow_uri": "" if opts.mlflow_uri == "" else (opts.mlflow_uri or default_mlflow_uri()),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("space", "name")},
    })
    # Ray is up (ray.init sets its own SIGTERM handler): from here on a signal
    # ends the sweep with a summary and the command that continues it.
    with interruptible() as stop:
        grid = _fit(_tuner(trials, name, root, opts, space), stop)
        return _summary(grid, name, root, space.n_trials, stop.reason, opts.address)


def resume_sweep(name: str, *, storage: str | None = None, address: str | None = None,
                 num_cpus: int | None = None, restart_errored: bool = False,
                 data_root: str | None = None, cluster_config: str | None = None) -> SweepSummary:
    """Continue an interrupted sweep: unfinished and errored trials run, finished ones don't.

    Trials get the storage address resolved here (the sweep may have moved,
    or been started before storage addresses were made absolute) and, when
    ``data_root`` is given, that data root instead of the one they started with.
    """
    from ray import tune

    from biohash.orchestrator.interrupt import interruptible
    from biohash.orchestrator.resources import check_satisfiable, trial_resources
    from biohash.trainables import trial_trainable

    root = storage_location(default_storage() if storage is None else storage)
    loc = root.join(name)
    info = _sweep_info(loc)
    if not tune.Tuner.can_restore(loc.path, storage_filesystem=loc.fs):
        raise SweepError(f"sweep {name!r} in {root.uri!r} has no Tune state to resume "
                         f"(it was interrupted before its first trial started); run it again")
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
    _tune_env()
    with interruptible() as stop:
        tuner = tune.Tuner.restore(loc.path, trainable, resume_unfinished=True,
                                   resume_errored=not restart_errored,
                                   restart_errored=restart_errored, storage_filesystem=loc.fs)
        grid = _fit(tuner, stop)
        return _summary(grid, name, root, int(info.get("n_trials", 0)), stop.reason, address)


def sweep_status(name: str, *, storage: str | None = None) -> dict[str, Any]:
    """Trial counts by state, read from storage only (no cluster needed).

    States: ``finished``, ``early_stopped``, ``diverged``, ``stopped``, ``errored``
    (a final record exists), ``started`` (no final record: running, or cut off
    by an interrupt) and ``pending`` (no trace yet).
    """
    from biohash.orchestrator.state import trial_states

    loc = storage_location(default_storage() if storage is None else storage).join(name)
    info = _sweep_info(loc)
    states = trial_states(loc)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    n = int(info.get("n_trials", 0))
    counts["pending"] = counts.get("pending", 0) + max(0, n - len(states))
    return {"name": name, "space": info.get("space"), "n_trials": n, "counts": counts,
            "created": info.get("created"), "path": loc.uri}


def list_sweep_names(storage: str | None = None) -> list[dict[str, Any]]:
    """Every sweep in ``storage`` with its space, size and creation time."""
    from biohash.results.store import list_sweeps, read_sweep_json

    root = storage_location(default_storage() if storage is None else storage)
    if not root.exists():
        return []
    out = []
    for name in list_sweeps(root.uri):
        meta = read_sweep_json(root.join(name))
        out.append({"name": name, "space": meta.get("space"), "n_trials": meta.get("n_trials"),
                    "created": meta.get("created")})
    return sorted(out, key=lambda m: m.get("created") or "")
