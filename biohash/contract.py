"""The contract between a trial and the driver: what a trial is given, what it reports.

One owner for three things that the trial (``biohash.trainables``,
``biohash.pipeline``) and the driver-side readers (the Parquet and MLflow
sinks, ``results repair``, the orchestrator's Tune settings) must agree on:

- ``TrialRuntime``: the typed form of the Tune config's ``runtime`` entry
  (where the trial runs: data root, device, sweep storage, checkpoint pace,
  and one explicitly named test hook). Unknown keys are an error.
- ``EpochReport``: the per-epoch report (``phase == "train"``), the keys
  ``biohash.pipeline.train`` sends after every epoch.
- ``FinalReport``: the last report of a trial (``phase == "final"``), built
  by ``biohash.pipeline.run`` and completed by the trainable (``finish``).
  Its wire form (``to_dict``) is what Tune carries, what ``final.json`` in
  storage holds and what the sinks read.

Every key list the readers need is *derived* here from those definitions
and never written again elsewhere: the Parquet outcome columns
(``OUTCOME_COLUMNS``, used by ``results.schema``), the MLflow final metrics
and tags (``FINAL_NUMBERS``, ``FINAL_TEXTS``), the non-metric bookkeeping
keys (``BOOKKEEPING``) and the Tune metric (``TUNE_METRIC``/``TUNE_MODE``).

Importable without torch, Ray or MLflow (stdlib, plus NumPy through
``biohash.metrics``): the CLI and the results readers use it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, TypedDict

from biohash.errors import ConfigError
from biohash.metrics.keys import REPORTED_METRICS

__all__ = [
    "EVAL_FOLDS", "REPORTED_METRICS", "TIME_PHASES", "PHASE", "TRAIN", "FINAL", "TUNE_METRIC",
    "TUNE_MODE", "SEARCH_METRICS", "SCORE", "HW_DEVICE", "HW_PRECISION", "DATA_PREFIX",
    "TOTAL_TIME", "FINAL_METRICS", "TIMES", "FINAL_NUMBERS", "FINAL_TEXTS", "OUTCOME_COLUMNS",
    "EPOCH_BOOKKEEPING", "BOOKKEEPING", "PROGRESS_COLUMNS", "metric_key", "time_key",
    "Runtime", "TrialRuntime", "EpochReport", "FinalReport",
]

# ----------------------------------------------------------------------- vocabulary
#: The folds evaluated against the database (``<fold>-prediction_mAP.json``), in h2q's order.
EVAL_FOLDS = ("query", "val")
#: The timed phases of a trial: ``time/<phase>_s`` in the final report.
TIME_PHASES = ("train", "predict", "eval")
#: Every report has ``phase``: ``TRAIN`` after each epoch, ``FINAL`` once at the end.
PHASE, TRAIN, FINAL = "phase", "train", "final"
#: What Tune (schedulers, searchers, best-trial) optimises: the per-epoch
#: validation mAP, present in every report (in the final one it is ``val/mAP``).
TUNE_METRIC, TUNE_MODE = "val_mAP", "max"
#: The metrics a search space may name as ``search.metric`` (reported every epoch).
SEARCH_METRICS = (TUNE_METRIC,)
#: The paper's headline metric of the query fold (``biohash.metrics.headline_key``).
SCORE = "score"
HW_DEVICE, HW_PRECISION = "hw/device", "hw/precision"
TOTAL_TIME = "time/total_s"
#: Epoch-report keys under this prefix describe the trial's data, not its
#: progress (``data/similar_probability``): MLflow logs them once as params.
DATA_PREFIX = "data/"


def metric_key(fold: str, metric: str) -> str:
    """``<fold>/<metric>``, e.g. ``query/mAP_at_5000``: a final metric's report key."""
    return f"{fold}/{metric}"


def time_key(phase: str) -> str:
    """``time/<phase>_s``, e.g. ``time/train_s``: seconds spent in one phase."""
    return f"time/{phase}_s"


#: ``query/mAP`` ... ``val/P_at_1000``: the final metrics of both eval folds.
FINAL_METRICS = tuple(metric_key(fold, m) for fold in EVAL_FOLDS for m in REPORTED_METRICS)
#: ``time/train_s``, ``time/predict_s``, ``time/eval_s``, ``time/total_s``.
TIMES = (*(time_key(p) for p in TIME_PHASES), TOTAL_TIME)
#: Numeric outcome keys of a final report (MLflow metrics at ``step=epochs_run``).
FINAL_NUMBERS = (SCORE, "best_epoch", "epochs_run", *FINAL_METRICS, *TIMES)
#: Text outcome keys of a final report (MLflow tags).
FINAL_TEXTS = (HW_DEVICE, HW_PRECISION, "run_dir")
#: A trial's recorded outcome, in column order, with its kind (``str``,
#: ``int``, ``float``, ``timestamp``): the final report's values plus
#: ``error``, which the driver adds for a trial that raised.
OUTCOME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("status", "str"), ("error", "str"), ("best_epoch", "int"), ("epochs_run", "int"),
    (SCORE, "float"), *((k, "float") for k in FINAL_METRICS), *((k, "float") for k in TIMES),
    (HW_DEVICE, "str"), (HW_PRECISION, "str"), ("run_dir", "str"), ("finished_at", "timestamp"))
#: Keys of an epoch report that identify it rather than measure anything.
EPOCH_BOOKKEEPING = (PHASE, "epoch", "trial_id")
#: Keys of any report that are not metrics (the final report adds its history).
BOOKKEEPING = (*EPOCH_BOOKKEEPING, "history")
#: Tune's progress table: report key -> column title.
PROGRESS_COLUMNS = {"epoch": "epoch", TUNE_METRIC: "val mAP", SCORE: "score"}


# ------------------------------------------------------------------------ reports
#: The per-epoch report (``biohash.pipeline.train``). Besides these keys it
#: carries ``train/<loss part>`` for each part of the loss (``train/loss`` is
#: the total), ``align/<layer>`` for bio models (degrees between the forward
#: weights and the feedback path) and, on CUDA, ``hw/gpu_max_mem_gib``.
#: ``data/similar_probability`` is sent with epoch 1 only.
EpochReport = TypedDict("EpochReport", {
    "phase": str, "epoch": int, "trial_id": str, "val_mAP": float, "best_val_mAP": float,
    "train/loss": float, "train/steps": int, "time/epoch_s": float,
    "time/train_images_per_s": float, "data/similar_probability": float,
    "hw/gpu_max_mem_gib": float}, total=False)


def _zeros() -> dict[str, dict[str, float]]:
    return {fold: {m: 0.0 for m in REPORTED_METRICS} for fold in EVAL_FOLDS}


@dataclass(frozen=True)
class FinalReport:
    """The last report of a trial.

    ``metrics``: ``{fold: {metric: value}}`` for every fold of ``EVAL_FOLDS``
    and every name of ``REPORTED_METRICS`` (0.0 when the trial was not
    evaluated, e.g. diverged with no usable checkpoint, as the old code did).
    ``times``: seconds per phase of ``TIME_PHASES``. ``history``: the epoch
    reports, in order. ``finished_at`` (ISO 8601, UTC) is stamped once by
    the trainable (``finish``): a re-delivered report rewrites the same row.
    """

    trial_id: str
    status: str
    best_epoch: int
    epochs_run: int
    run_dir: str
    device: str
    precision: str
    score: float = 0.0
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=_zeros)
    times: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(TIME_PHASES, 0.0))
    history: tuple[Mapping[str, Any], ...] = ()
    finished_at: str | None = None

    @property
    def val_mAP(self) -> float:
        """The final ``val/mAP``, reported under Tune's metric name as well."""
        return float(self.metrics.get("val", {}).get("mAP", 0.0))

    def finish(self, *, run_dir: str | None = None,
               now: datetime | None = None) -> "FinalReport":
        """The report as the trainable sends it: ``finished_at`` stamped and,
        when the run directory was copied to storage, ``run_dir`` pointing there."""
        stamp = (now or datetime.now(timezone.utc)).isoformat()
        return dataclasses.replace(self, finished_at=stamp, run_dir=run_dir or self.run_dir)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: flat keys, ``history`` as a JSON string (Tune flattens nested values)."""
        out: dict[str, Any] = {
            PHASE: FINAL, "trial_id": self.trial_id, "status": self.status,
            "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
            "epoch": self.epochs_run, "run_dir": self.run_dir, HW_DEVICE: self.device,
            HW_PRECISION: self.precision, "history": json.dumps([dict(h) for h in self.history])}
        for fold in EVAL_FOLDS:
            values = self.metrics.get(fold, {})
            out.update({metric_key(fold, m): float(values.get(m, 0.0)) for m in REPORTED_METRICS})
        out[SCORE] = float(self.score)
        out.update({time_key(p): float(self.times.get(p, 0.0)) for p in TIME_PHASES})
        out[TOTAL_TIME] = math.fsum(out[time_key(p)] for p in TIME_PHASES)
        out[TUNE_METRIC] = self.val_mAP
        if self.finished_at is not None:
            out["finished_at"] = self.finished_at
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "final report") -> "FinalReport":
        """Parse a wire-form report (``final.json``, a Tune result); ``ConfigError``
        naming ``source`` and the key when it is not a complete final report."""
        if data.get(PHASE) != FINAL:
            raise ConfigError(f"{source}: not a final report ({PHASE}={data.get(PHASE)!r}; "
                              f"expected {FINAL!r})")
        try:
            history = data.get("history") or "[]"
            return cls(
                trial_id=str(data["trial_id"]), status=str(data["status"]),
                best_epoch=int(data["best_epoch"]), epochs_run=int(data["epochs_run"]),
                run_dir=str(data["run_dir"]), device=str(data[HW_DEVICE]),
                precision=str(data[HW_PRECISION]), score=float(data[SCORE]),
                metrics={fold: {m: float(data[metric_key(fold, m)]) for m in REPORTED_METRICS}
                         for fold in EVAL_FOLDS},
                times={p: float(data[time_key(p)]) for p in TIME_PHASES},
                history=tuple(json.loads(history) if isinstance(history, str) else history),
                finished_at=None if data.get("finished_at") is None else str(data["finished_at"]))
        except KeyError as exc:
            raise ConfigError(f"{source}: final report without key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: bad value in final report: {exc}") from None


# ------------------------------------------------------------------------ runtime
@dataclass(frozen=True)
class Runtime:
    """Where and how to run; not part of a trial's identity.

    ``data_root`` may be a local folder or a URI (``s3://bucket/data``): the
    processed dataset is then cached once per node (see ``biohash.data``).
    """

    data_root: str = "data"
    device: str = "auto"
    cache_dir: str | None = None
    eval_batch_size: int = 256


_RUNTIME_KEYS = tuple(f.name for f in dataclasses.fields(Runtime))


@dataclass(frozen=True)
class TrialRuntime:
    """The Tune config's ``runtime`` entry: a ``Runtime`` plus what only a sweep trial needs.

    ``storage``: the sweep storage root (absolute folder or URI), or None to
    keep results only in the trial's local folder. ``checkpoint_interval_s``:
    least seconds between two checkpoints sent to storage (0 = every epoch;
    a VGG16 checkpoint is ~2 GB). ``test_crash_after``: a **test and
    rehearsal hook**, ``"<trial_id>:<epoch>"``: that trial raises once right
    after reporting that epoch (a marker file in its folder remembers it), so
    tests exercise Tune's real retry-from-checkpoint path and a cluster
    rehearsal can play a spot-node loss. Never set in a real sweep.

    The dict form (``to_dict``) is flat: ``Runtime``'s fields beside the others.
    """

    runtime: Runtime = field(default_factory=Runtime)
    storage: str | None = None
    checkpoint_interval_s: float = 0.0
    test_crash_after: str | None = None

    #: Keys of older Tune states (sweeps started before this contract) -> field.
    _RENAMED = {"crash_once": "test_crash_after"}

    def __post_init__(self) -> None:
        interval = self.checkpoint_interval_s
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or not math.isfinite(interval) or interval < 0:
            raise ConfigError(f"bad runtime checkpoint_interval_s {interval!r}; "
                              "allowed: a finite number of seconds >= 0")
        spec = self.test_crash_after
        if spec is not None:
            _, sep, epoch = spec.partition(":")
            if not sep or not epoch.isdigit():
                raise ConfigError(f"bad runtime test_crash_after {spec!r}; "
                                  "allowed: '<trial_id>:<epoch>'")

    @property
    def crash_point(self) -> tuple[str, int] | None:
        """``(trial_id, epoch)`` of the test hook, or None."""
        if self.test_crash_after is None:
            return None
        trial_id, _, epoch = self.test_crash_after.partition(":")
        return trial_id, int(epoch)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.runtime), "storage": self.storage,
                "checkpoint_interval_s": self.checkpoint_interval_s,
                "test_crash_after": self.test_crash_after}

    @classmethod
    def from_dict(cls, data: "Mapping[str, Any] | TrialRuntime | None",
                  **overrides: Any) -> "TrialRuntime":
        """From the flat dict form (or a ``TrialRuntime``), ``overrides`` replacing
        entries (``sweep resume``'s storage / data root). Raises ``ConfigError``
        naming an unknown key and the keys allowed."""
        if isinstance(data, TrialRuntime):
            data = data.to_dict()
        values = {cls._RENAMED.get(k, k): v for k, v in {**(data or {}), **overrides}.items()}
        own = tuple(f.name for f in dataclasses.fields(cls) if f.name != "runtime")
        unknown = sorted(set(values) - set(own) - set(_RUNTIME_KEYS))
        if unknown:
            raise ConfigError(f"unknown runtime key {unknown[0]!r}; allowed: "
                              f"{', '.join((*_RUNTIME_KEYS, *own))}")
        return cls(Runtime(**{k: values[k] for k in _RUNTIME_KEYS if k in values}),
                   **{k: values[k] for k in own if k in values})
