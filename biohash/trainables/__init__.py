"""The Ray Tune function trainable: one trial = train -> predict -> evaluate.

A thin adapter over :func:`biohash.pipeline.run_trial`: it reads the trial
config, restores from ``tune.get_checkpoint()`` when Tune retries or
resumes the trial, turns each epoch into ``tune.report(metrics,
checkpoint=...)`` and reports the final evaluation once more at the end.
Everything else (models, data, metrics) is ordinary library code.

``config`` (built by the orchestrator) has three keys: ``trial`` (a
``TrialConfig`` dict), ``sweep`` (the sweep name) and ``runtime`` (a
``Runtime`` dict plus ``storage``, the sweep storage root).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["trial_trainable", "trial_dirname", "trial_name", "RUN_SUBDIR",
           "CRASH_ONCE_ENV"]

#: Run directories live under ``<trial dir>/models/...`` (old-workflow names).
RUN_SUBDIR = "models"
#: Test hook: ``"<trial_id>:<epoch>"`` makes that trial raise once after that
#: epoch's report (a marker file under the trial dir remembers it crashed), to
#: exercise retry-from-checkpoint with the real Tune machinery.
CRASH_ONCE_ENV = "BIOHASH_CRASH_ONCE"


def trial_dirname(trial: Any) -> str:
    """Stable, short trial folder names: ``<db>-<arch>-<trial_id>``."""
    from biohash.config import TrialConfig

    cfg = TrialConfig.from_dict(trial.config["trial"])
    return f"{cfg.db}-{cfg.arch}-{cfg.trial_id}"


def trial_name(trial: Any) -> str:
    from biohash.config import TrialConfig

    cfg = TrialConfig.from_dict(trial.config["trial"])
    return f"{cfg.db}/{cfg.arch}/{cfg.effective_mode}/{cfg.nbits}b/{cfg.loss}/s{cfg.seed}"


def _crash_hook(trial_id: str, trial_dir: Path):
    spec = os.environ.get(CRASH_ONCE_ENV, "")
    target, _, epoch = spec.partition(":")
    marker = trial_dir / ".crashed-once"
    if target != trial_id or marker.exists():
        return None

    def hook(metrics: dict[str, Any]) -> None:
        if metrics.get("epoch") == int(epoch):
            marker.write_text("1")
            raise RuntimeError(f"injected crash after epoch {epoch} ({CRASH_ONCE_ENV})")
    return hook


def trial_trainable(config: dict[str, Any]) -> None:
    """The function trainable passed to ``tune.Tuner``."""
    from ray import tune

    from biohash.config import TrialConfig
    from biohash.pipeline.run import run_trial
    from biohash.pipeline.runtime import Runtime

    cfg = TrialConfig.from_dict(config["trial"])
    rt = dict(config.get("runtime", {}))
    storage = rt.pop("storage", None)
    runtime = Runtime(**rt)
    trial_dir = Path(tune.get_context().get_trial_dir())
    run_dir = cfg.run_dir(trial_dir / RUN_SUBDIR)
    crash = _crash_hook(cfg.trial_id, trial_dir)

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        if crash is not None:
            crash(metrics)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        final = run_trial(cfg, run_dir, runtime=runtime, report=report)
    else:
        with checkpoint.as_directory() as resume:
            final = run_trial(cfg, run_dir, runtime=runtime, report=report, resume=resume)
    if storage:  # where the run directory ends up once Tune syncs the trial's artifacts
        final["run_dir"] = f"{storage.rstrip('/')}/{config['sweep']}/{trial_dir.name}/" \
                           f"{run_dir.relative_to(trial_dir)}"
    final["val_mAP"] = final.get("val/mAP", 0.0)
    tune.report(final)
