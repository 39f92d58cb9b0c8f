"""The Ray Tune function trainable: one trial = train -> predict -> evaluate.

A thin adapter over :func:`biohash.pipeline.run_trial`: it reads the trial
config, restores from ``tune.get_checkpoint()`` when Tune retries or
resumes the trial, turns each epoch into ``tune.report(metrics,
checkpoint=...)`` and reports the final evaluation once more at the end.
Everything else (models, data, metrics) is ordinary library code.

``config`` (built by the orchestrator) has three keys: ``trial`` (a
``TrialConfig`` dict), ``sweep`` (the sweep name) and ``runtime`` (a
``biohash.contract.TrialRuntime`` in its dict form). Both its ``storage``
and ``data_root`` are absolute addresses: the trial runs in its own Ray
working directory, where a relative path would name another place. What the
trial reports is ``biohash.contract.EpochReport`` / ``FinalReport``; where
it writes in storage is ``biohash.storage``'s layout.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from biohash.contract import TrialRuntime
from biohash.storage import trial_folder_name

__all__ = ["trial_trainable", "trial_dirname", "trial_name", "upload_run_dir",
           "remove_local_checkpoints", "RUN_SUBDIR"]

log = logging.getLogger(__name__)

#: Run directories live under ``<trial dir>/models/...`` (old-workflow names).
RUN_SUBDIR = "models"
#: Marker in the local trial folder: the test hook has fired (it fires once).
_CRASHED_MARKER = ".crashed-once"


def trial_dirname(trial: Any) -> str:
    """Stable, short trial folder names: ``<db>-<arch>-<trial_id>``."""
    from biohash.config import TrialConfig

    cfg = TrialConfig.from_dict(trial.config["trial"])
    return trial_folder_name(cfg.db, cfg.arch, cfg.trial_id)


def trial_name(trial: Any) -> str:
    from biohash.config import TrialConfig

    cfg = TrialConfig.from_dict(trial.config["trial"])
    return f"{cfg.db}/{cfg.arch}/{cfg.effective_mode}/{cfg.nbits}b/{cfg.loss}/s{cfg.seed}"


def _crash_hook(runtime: TrialRuntime, trial_id: str,
                trial_dir: Path) -> Callable[[dict[str, Any]], None] | None:
    """``TrialRuntime.test_crash_after`` as a function called after each report."""
    point = runtime.crash_point
    marker = trial_dir / _CRASHED_MARKER
    if point is None or point[0] != trial_id or marker.exists():
        return None

    def hook(metrics: dict[str, Any]) -> None:
        if metrics.get("epoch") == point[1]:
            marker.write_text("1")
            raise RuntimeError(f"injected crash after epoch {point[1]} (test_crash_after)")
    return hook


def trial_trainable(config: dict[str, Any],
                    runtime_overrides: dict[str, Any] | None = None) -> None:
    """The function trainable passed to ``tune.Tuner``.

    ``runtime_overrides`` (given by ``sweep resume`` through
    ``tune.with_parameters``; a restored trial's ``config`` cannot change)
    replace entries of ``config["runtime"]``: the storage address resolved by
    the resuming driver and, if asked, another data root.
    """
    from ray import tune

    from biohash.config import TrialConfig
    from biohash.pipeline.run import run_trial
    from biohash.storage import final_report, read_json, sweep_dir, write_bytes

    cfg = TrialConfig.from_dict(config["trial"])
    rt = TrialRuntime.from_dict(config.get("runtime"), **(runtime_overrides or {}))
    trial_dir = Path(tune.get_context().get_trial_dir())
    run_dir = cfg.run_dir(trial_dir / RUN_SUBDIR)
    crash = _crash_hook(rt, cfg.trial_id, trial_dir)
    last_checkpoint = [-float("inf")]

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        # A VGG16 checkpoint (weights + Adam state + best weights) is ~2 GB:
        # uploading it every epoch would cost more than the epoch on a GPU.
        if time.monotonic() - last_checkpoint[0] >= rt.checkpoint_interval_s:
            last_checkpoint[0] = time.monotonic()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        else:
            tune.report(metrics)
        if crash is not None:
            crash(metrics)

    sweep = sweep_dir(rt.storage, config["sweep"]) if rt.storage else None
    done = final_report(sweep, trial_dir.name) if sweep is not None else None
    if done is not None and (previous := read_json(done, what="final report")) is not None:
        # Finished before, but the driver died before Tune recorded it (the
        # Parquet sink may already hold the row): deliver the very same final
        # report again (same finished_at), rerun nothing.
        tune.report(previous)
        return
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        final = run_trial(cfg, run_dir, runtime=rt.runtime, report=report)
    else:
        with checkpoint.as_directory() as resume:
            final = run_trial(cfg, run_dir, runtime=rt.runtime, report=report, resume=resume)
    if done is None:
        tune.report(final.finish().to_dict())
        return
    final = final.finish(run_dir=upload_run_dir(run_dir, sweep, trial_dir))
    # Durable before it is reported: whatever the driver records next, a
    # resumed sweep finds this and does not run the trial again.
    write_bytes(done, json.dumps(final.to_dict()).encode())
    # Only now is everything of the trial in storage (its Tune checkpoints went
    # there with each report): the local copies would only fill the disk.
    remove_local_checkpoints(run_dir)
    tune.report(final.to_dict())


def upload_run_dir(run_dir: Path, sweep: Any, trial_dir: Path) -> str:
    """Copy a finished run directory (not its checkpoints) next to the trial's
    Tune folder in storage (``sweep``: the sweep's ``biohash.storage.Location``);
    returns where it is.

    Done once, after evaluate, by the trial itself rather than by Tune's
    background artifact sync: that sync copies the folder while the trial is
    still writing (atomic temp files come and go) and then fails the trial.
    Checkpoints already reach storage through ``tune.report``.
    """
    from pyarrow import fs as pafs

    from biohash.pipeline.checkpoint import CHECKPOINT_DIR
    from biohash.storage import run_dir_copy

    dest = run_dir_copy(sweep, trial_dir.name, *run_dir.relative_to(trial_dir).parts)
    dest.fs.create_dir(dest.path, recursive=True)
    local = pafs.LocalFileSystem()
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and path.name != CHECKPOINT_DIR and not path.name.startswith("."):
            pafs.copy_files(str(path), dest.join(path.name).path, source_filesystem=local,
                            destination_filesystem=dest.fs)
    return dest.uri


def remove_local_checkpoints(run_dir: Path) -> None:
    """Delete a finished run's local ``checkpoints/`` folder (a VGG16 trial
    leaves ~2.5 GB; a worker's disk filled after ~80 trials).

    Call only once the run directory and the final report are in storage:
    a retry then finds ``final.json`` and reruns nothing, so the local
    checkpoints can no longer be needed.
    """
    from biohash.pipeline.checkpoint import CHECKPOINT_DIR

    folder = run_dir / CHECKPOINT_DIR
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass
    except OSError as exc:  # the trial's results are safe; only disk space is at stake
        log.warning("could not delete the local checkpoints %s: %s", folder, exc)
