"""The Ray Tune function trainable: one trial = train -> predict -> evaluate.

A thin adapter over :func:`biohash.pipeline.run_trial`: it reads the trial
config, restores from ``tune.get_checkpoint()`` when Tune retries or
resumes the trial, turns each epoch into ``tune.report(metrics,
checkpoint=...)`` and reports the final evaluation once more at the end.
Everything else (models, data, metrics) is ordinary library code.

``config`` (built by the orchestrator) has three keys: ``trial`` (a
``TrialConfig`` dict), ``sweep`` (the sweep name) and ``runtime`` (a
``Runtime`` dict plus ``storage``, the sweep storage root). Both ``storage``
and ``runtime["data_root"]`` are absolute addresses: the trial runs in its
own Ray working directory, where a relative path would name another place.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

__all__ = ["trial_trainable", "trial_dirname", "trial_id_of_dirname", "trial_name",
           "upload_run_dir", "RUN_SUBDIR", "CRASH_ONCE", "CHECKPOINT_INTERVAL", "FINAL_FILE"]

#: Run directories live under ``<trial dir>/models/...`` (old-workflow names).
RUN_SUBDIR = "models"
#: Fault-injection hook (``runtime[CRASH_ONCE] = "<trial_id>:<epoch>"``): that
#: trial raises once right after reporting that epoch (a marker file in the
#: trial folder remembers it), so tests exercise Tune's real retry-from-
#: checkpoint path. Also handy to rehearse a spot-node loss on a cluster.
CRASH_ONCE = "crash_once"
#: Runtime key: least seconds between two checkpoints sent to storage (0 = every epoch).
CHECKPOINT_INTERVAL = "checkpoint_interval_s"
#: The final report of a finished trial, stored beside its Tune folder.
FINAL_FILE = "final.json"


def trial_dirname(trial: Any) -> str:
    """Stable, short trial folder names: ``<db>-<arch>-<trial_id>``."""
    from biohash.config import TrialConfig

    cfg = TrialConfig.from_dict(trial.config["trial"])
    return f"{cfg.db}-{cfg.arch}-{cfg.trial_id}"


_DIRNAME = re.compile(r"^.+-([0-9a-f]{12})$")


def trial_id_of_dirname(name: str) -> str | None:
    """The trial id in a ``trial_dirname`` folder name, or None for other folders."""
    match = _DIRNAME.match(name)
    return match.group(1) if match else None


def trial_name(trial: Any) -> str:
    from biohash.config import TrialConfig

    cfg = TrialConfig.from_dict(trial.config["trial"])
    return f"{cfg.db}/{cfg.arch}/{cfg.effective_mode}/{cfg.nbits}b/{cfg.loss}/s{cfg.seed}"


def _crash_hook(spec: str | None, trial_id: str, trial_dir: Path):
    target, _, epoch = (spec or "").partition(":")
    marker = trial_dir / ".crashed-once"
    if target != trial_id or marker.exists():
        return None

    def hook(metrics: dict[str, Any]) -> None:
        if metrics.get("epoch") == int(epoch):
            marker.write_text("1")
            raise RuntimeError(f"injected crash after epoch {epoch} ({CRASH_ONCE})")
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
    from biohash.pipeline.runtime import Runtime
    from biohash.results.store import write_bytes

    cfg = TrialConfig.from_dict(config["trial"])
    rt = {**config.get("runtime", {}), **(runtime_overrides or {})}
    storage = rt.pop("storage", None)
    crash_spec = rt.pop(CRASH_ONCE, None)
    interval = float(rt.pop(CHECKPOINT_INTERVAL, 0.0))
    runtime = Runtime(**rt)
    trial_dir = Path(tune.get_context().get_trial_dir())
    run_dir = cfg.run_dir(trial_dir / RUN_SUBDIR)
    crash = _crash_hook(crash_spec, cfg.trial_id, trial_dir)

    last_checkpoint = [-float("inf")]

    def report(metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        # A VGG16 checkpoint (weights + Adam state + best weights) is ~2 GB:
        # uploading it every epoch would cost more than the epoch on a GPU.
        if time.monotonic() - last_checkpoint[0] >= interval:
            last_checkpoint[0] = time.monotonic()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        else:
            tune.report(metrics)
        if crash is not None:
            crash(metrics)

    done = _final_location(storage, config["sweep"], trial_dir) if storage else None
    if done is not None and done.exists():
        # Finished before, but the driver died before Tune recorded it (the
        # Parquet sink may already hold the row): deliver the very same final
        # report again (same finished_at), rerun nothing.
        with done.fs.open_input_stream(done.path) as fh:
            tune.report(json.loads(fh.read()))
        return
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        final = run_trial(cfg, run_dir, runtime=runtime, report=report)
    else:
        with checkpoint.as_directory() as resume:
            final = run_trial(cfg, run_dir, runtime=runtime, report=report, resume=resume)
    final["val_mAP"] = final.get("val/mAP", 0.0)
    final["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    if done is not None:
        final["run_dir"] = upload_run_dir(run_dir, storage, config["sweep"], trial_dir)
        # Durable before it is reported: whatever the driver records next, a
        # resumed sweep finds this and does not run the trial again.
        write_bytes(done, json.dumps(final).encode())
    tune.report(final)


def _final_location(storage: str, sweep: str, trial_dir: Path):
    """``<storage>/<sweep>/<trial folder>/final.json`` (a ``results.store.Location``)."""
    from biohash.results.store import resolve

    return resolve(storage).join(sweep, trial_dir.name, FINAL_FILE)


def upload_run_dir(run_dir: Path, storage: str, sweep: str, trial_dir: Path) -> str:
    """Copy a finished run directory (not its checkpoints) next to the trial's
    Tune folder in storage; returns where it is.

    Done once, after evaluate, by the trial itself rather than by Tune's
    background artifact sync: that sync copies the folder while the trial is
    still writing (atomic temp files come and go) and then fails the trial.
    Checkpoints already reach storage through ``tune.report``.
    """
    from pyarrow import fs as pafs

    from biohash.pipeline.checkpoint import CHECKPOINT_DIR
    from biohash.results.store import resolve

    dest = resolve(storage).join(sweep, trial_dir.name, *run_dir.relative_to(trial_dir).parts)
    dest.fs.create_dir(dest.path, recursive=True)
    local = pafs.LocalFileSystem()
    for path in sorted(run_dir.iterdir()):
        if path.is_file() and path.name != CHECKPOINT_DIR and not path.name.startswith("."):
            pafs.copy_files(str(path), dest.join(path.name).path, source_filesystem=local,
                            destination_filesystem=dest.fs)
    return dest.uri
