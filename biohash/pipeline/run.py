"""One trial end to end (train -> predict -> evaluate) and the run directory.

A run directory holds ``config.json``, ``status.json`` (one status per
phase), ``checkpoints/``, the predictions and the eval JSON files. The
rerun policy is the old workflow's: by default a finished run is skipped,
``-no_skip`` reruns it, ``-soft_skip`` also skips runs that started but
did not finish; an interrupted run continues from ``checkpoints/latest.pt``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from biohash.config import TrialConfig
from biohash.pipeline import checkpoint as ckpt
from biohash.contract import EVAL_FOLDS, SCORE, FinalReport
from biohash.pipeline.evaluate import evaluate
from biohash.pipeline.predict import predict
from biohash.pipeline.runtime import Runtime, TrialContext, open_context
from biohash.pipeline.train import ReportFn, TrainResult, train
from biohash.utils import atomic_write_json, resolve_device

__all__ = ["STATUS_FILE", "DONE", "read_status", "write_status", "skip_reason", "resume_point",
           "train_in_run_dir", "run_trial", "final_report"]

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
#: Train statuses of a run that ended on its own (as opposed to running/failed).
DONE = ("finished", "early_stopped", "diverged")


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's phase statuses; {} when ``status.json`` is missing, and also
    (with a warning) when it is empty or truncated: the phases then count as
    not run, so the run continues instead of failing on its own bookkeeping."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return {}
    try:
        status = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring damaged %s (%s); treated as missing", path, exc)
        return {}
    return status if isinstance(status, dict) else {}


def write_status(run_dir: str | Path, **phases: str) -> None:
    status = read_status(run_dir)
    for phase, value in phases.items():
        status[phase] = value
        status[f"{phase}_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(Path(run_dir) / STATUS_FILE, status)


def skip_reason(cfg: TrialConfig, run_dir: str | Path, phase: str = "train") -> str | None:
    """Why ``phase`` should not run again, or None (old -no_skip/-soft_skip rules)."""
    if cfg.no_skip:
        return None
    status = read_status(run_dir).get(phase)
    if status in DONE or status == "done":
        return f"{phase} already {status} in {run_dir} (use -no_skip to rerun)"
    if cfg.soft_skip and status is not None:
        return f"{phase} has status {status!r} in {run_dir} (-soft_skip)"
    return None


def resume_point(cfg: TrialConfig, run_dir: Path) -> Path | None:
    """The checkpoint folder to continue from, if an unfinished run left one."""
    latest = run_dir / ckpt.CHECKPOINT_DIR / ckpt.LATEST
    if cfg.no_skip or not latest.is_file():
        return None
    if not ckpt.is_complete(latest):
        log.warning("ignoring the empty or truncated %s; the run starts afresh", latest)
        return None
    return latest.parent


def _device_label(runtime: Runtime) -> str:
    device = resolve_device(runtime.device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def final_report(cfg: TrialConfig, run_dir: Path, result: TrainResult,
                 evals: dict[str, dict] | None, times: dict[str, float],
                 runtime: Runtime) -> FinalReport:
    """The last report of a trial (``biohash.contract.FinalReport``).

    ``evals``: ``evaluate``'s old-key metrics per fold, None when the run was
    not evaluated (its metrics and score are then 0, as in the old code).
    """
    from biohash.metrics import REPORTED_METRICS, metric_name

    metrics = {}
    for fold in EVAL_FOLDS:
        flat = {metric_name(k): float(v) for k, v in (evals or {}).get(fold, {}).items()
                if k != SCORE}
        metrics[fold] = {name: flat.get(name, 0.0) for name in REPORTED_METRICS}
    return FinalReport(
        trial_id=cfg.trial_id, status=result.status, best_epoch=result.best_epoch,
        epochs_run=result.epochs_run, run_dir=str(run_dir), device=_device_label(runtime),
        precision=cfg.precision, score=float((evals or {}).get("query", {}).get(SCORE, 0.0)),
        metrics=metrics, times=dict(times), history=tuple(result.history))


def train_in_run_dir(cfg: TrialConfig, run_dir: Path, *, runtime: Runtime,
                     report: ReportFn | None = None, resume: str | Path | None = None,
                     ctx: TrialContext | None = None) -> TrainResult:
    """Train with the run directory's bookkeeping: ``config.json`` and the
    train status (running -> its outcome, or failed if anything raised)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir)
    write_status(run_dir, train="running")
    try:
        result = train(cfg, run_dir, runtime=runtime, report=report, resume=resume, ctx=ctx)
    except BaseException:
        write_status(run_dir, train="failed")
        raise
    write_status(run_dir, train=result.status)
    return result


def run_trial(cfg: TrialConfig, run_dir: str | Path, *, runtime: Runtime | None = None,
              report: ReportFn | None = None, resume: str | Path | None = None) -> FinalReport:
    """Train, predict and evaluate ``cfg`` in ``run_dir``; returns the final report.

    A diverged run with no usable checkpoint is not predicted; its metrics are 0.
    """
    runtime = runtime or Runtime()
    run_dir = Path(run_dir)
    ctx = open_context(cfg, runtime)  # data, model and loss built once for all phases
    result = train_in_run_dir(cfg, run_dir, runtime=runtime, report=report, resume=resume,
                              ctx=ctx)
    times = {"train": result.train_seconds, "predict": 0.0, "eval": 0.0}
    evals = None
    if (run_dir / ckpt.CHECKPOINT_DIR / ckpt.BEST).is_file():
        times["predict"] = predict(cfg, run_dir, runtime=runtime, ctx=ctx)
        write_status(run_dir, predict="done")
        evals, times["eval"] = evaluate(run_dir)
        write_status(run_dir, eval="done")
    return final_report(cfg, run_dir, result, evals, times, runtime)
