"""Sweeps on a real local Ray: completion, retry from checkpoint, driver kill + resume, bad input."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from biohash.config import TrialConfig
from biohash.errors import BiohashError, ConfigError, SweepError
from biohash.orchestrator import SweepOptions, resume_sweep, run_sweep, sweep_status

pytestmark = pytest.mark.slow


def _space(tmp_path: Path, *, modes=("fa", "bp"), ep: int = 2, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""\
        description: tiny DIGITS grid for tests
        fixed: {{db: DIGITS, arch: bio-cnn-small, loss: DPSH, nbits: 16, bs: 64, ep: {ep}, pt: 5,
                lr: 1.0e-3, wd: 0.0, weights: none, val_size: 200, val_repeats: 2}}
        grid: {{mode: [{", ".join(modes)}]}}
        """))
    return path


def _rows(storage: Path, sweep: str) -> dict[str, dict]:
    files = sorted(f for f in (storage / sweep / "results" / "trials").glob("*.parquet")
                   if not f.name.startswith(("_", ".")))  # skip the compacted snapshot
    rows = [pq.read_table(f).to_pylist()[0] for f in files]
    return {r["trial_id"]: r for r in rows}


def _options(tmp_path, space, name, digits_root, **kw) -> SweepOptions:
    return SweepOptions(space=str(space), name=name, storage=str(tmp_path / "sweeps"),
                        data_root=str(digits_root), mlflow_uri="", num_cpus=2, verbose=0, **kw)


def test_sweep_runs_to_completion_one_result_per_trial(tmp_path, digits_root, ray_local,
                                                        monkeypatch):
    summary = run_sweep(_options(tmp_path, _space(tmp_path), "s1", digits_root))
    assert summary.n_trials == 2 and summary.counts == {"done": 2} and not summary.errors
    rows = _rows(tmp_path / "sweeps", "s1")
    assert len(rows) == 2 and {r["mode"] for r in rows.values()} == {"fa", "bp"}
    assert all(r["status"] == "finished" and r["score"] > 0 for r in rows.values())
    for row in rows.values():  # the run directory, old names and files, lands in storage
        run_dir = Path(row["run_dir"])
        assert run_dir.is_relative_to(tmp_path / "sweeps" / "s1") and run_dir.name.startswith("-loss=")
        assert json.loads((run_dir / "query-prediction_mAP.json").read_text())["score"] == \
            pytest.approx(row["score"])
        assert (run_dir / "database-codes.npy").is_file()
    status = sweep_status("s1", storage=str(tmp_path / "sweeps"))
    assert status["state"] == "done" and status["counts"] == \
        {"done": 2, "running": 0, "pending": 0, "failed": 0, "stopped": 0}
    with pytest.raises(SweepError, match="already exists"):
        run_sweep(_options(tmp_path, _space(tmp_path), "s1", digits_root))
    # Resuming a sweep whose every trial is done says so from storage, without a cluster.
    import biohash.orchestrator.sweep as sweep_mod

    def no_cluster(*args, **kwargs):
        raise AssertionError("a done sweep needs no cluster to resume")

    monkeypatch.setattr(sweep_mod, "_init_ray", no_cluster)
    again = resume_sweep("s1", storage=str(tmp_path / "sweeps"))
    assert again.counts == {"done": 2} and again.resume is None and not again.errors
    assert _rows(tmp_path / "sweeps", "s1") == rows  # nothing ran again


def test_asha_stops_weak_trials_and_every_trial_is_recorded(tmp_path, digits_root, ray_local):
    space = tmp_path / "asha.yaml"
    # One config that learns, then two that cannot (lr ~ 0): run one at a time,
    # the weak ones reach the epoch-2 rung after the good one and are cut.
    space.write_text(textwrap.dedent("""\
        fixed: {db: DIGITS, arch: cnn-small, loss: DPSH, nbits: 16, bs: 64, ep: 4, pt: 5,
                wd: 0.0, weights: none, val_size: 180, val_repeats: 2, optim: sgd}
        grid: {lr: [1.0e-2, 1.0e-12, 1.0e-13]}
        """))
    summary = run_sweep(_options(tmp_path, space, "asha", digits_root, scheduler="asha",
                                 max_concurrent=1))
    rows = sorted(_rows(tmp_path / "sweeps", "asha").values(), key=lambda r: -r["lr"])
    assert len(rows) == 3 and not summary.errors
    assert [r["status"] for r in rows] == ["finished", "stopped", "stopped"]
    assert rows[0]["score"] > 0 and rows[0]["epochs_run"] == 4
    assert all(r["score"] is None and r["epochs_run"] == 2 for r in rows[1:])


def test_a_crashed_trial_is_retried_from_its_checkpoint_with_identical_metrics(
        tmp_path, digits_root, ray_local):
    space = _space(tmp_path, modes=("usf",), ep=3)
    trial = TrialConfig.from_dict({"db": "DIGITS", "arch": "bio-cnn-small", "loss": "DPSH",
                                   "nbits": 16, "bs": 64, "ep": 3, "pt": 5, "lr": 1e-3, "wd": 0.0,
                                   "weights": "none", "val_size": 200, "val_repeats": 2,
                                   "mode": "usf"})
    run_sweep(_options(tmp_path, space, "clean", digits_root))
    crashed = run_sweep(_options(tmp_path, space, "crashy", digits_root, checkpoint_interval=0,
                                 extra_runtime={"test_crash_after": f"{trial.trial_id}:2"}))
    assert crashed.counts == {"done": 1}
    clean, retried = _rows(tmp_path / "sweeps", "clean"), _rows(tmp_path / "sweeps", "crashy")
    assert set(clean) == set(retried) == {trial.trial_id}
    marker = list((tmp_path / "sweeps" / "crashy").glob("*/.crashed-once"))
    assert marker, "the injected crash must have happened"
    metric_cols = [c for c in clean[trial.trial_id] if c.startswith(("query/", "val/"))] + ["score"]
    assert {c: retried[trial.trial_id][c] for c in metric_cols} == \
           {c: clean[trial.trial_id][c] for c in metric_cols}


def _launch(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "biohash.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_driver_killed_mid_sweep_resumes_without_losing_or_rerunning(tmp_path, digits_root):
    storage = tmp_path / "sweeps"
    space = _space(tmp_path, modes=("bp", "fa", "usf", "frsf"), ep=2)
    common = ["--storage", str(storage), "--data-root", str(digits_root), "--num-cpus", "1"]
    # One CPU runs the trials one at a time. No --max-concurrent: with it, Tune
    # creates trials lazily, and a restore of a sweep killed mid-creation can
    # leave a trial PENDING forever (seen with Ray 2.60).
    proc = _launch(["sweep", "run", "--space", str(space), "--name", "k", "--mlflow-uri", "",
                    *common], tmp_path / "run.log")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(_rows(storage, "k")) < 1:
            time.sleep(1)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        done_before = _rows(storage, "k")
        assert 1 <= len(done_before) < 4
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    # Two CPUs on resume: with one, Ray Tune 2.60 can leave a restored trial
    # PENDING while a cached (reusable) actor holds the only CPU.
    resume = _launch(["sweep", "resume", "k", *common[:-1], "2"], tmp_path / "resume.log")
    assert resume.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    after = _rows(storage, "k")
    assert len(after) == 4
    from biohash.results import load_results

    table = load_results([str(storage / "k")])  # what every reader sees: one row per trial
    assert len(table) == 4 and table["trial_id"].is_unique
    for tid, row in done_before.items():  # finished trials were not run again
        assert after[tid]["finished_at"] == row["finished_at"]


def test_bad_sweep_input_fails_before_anything_runs(tmp_path, digits_root):
    storage = tmp_path / "sweeps"
    with pytest.raises(ConfigError, match="unknown search space 'nope'"):
        run_sweep(_options(tmp_path, "nope", "x", digits_root))
    bad = tmp_path / "bad.yaml"
    bad.write_text("fixed: {db: DIGITS}\ngrid: {mode: [fa, zz]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*mode.*'zz'"):
        run_sweep(_options(tmp_path, bad, "x", digits_root))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    opts = SweepOptions(space=str(_space(tmp_path)), name="x", storage=str(blocker / "sub"),
                        data_root=str(digits_root), mlflow_uri="")
    with pytest.raises(BiohashError, match="not writable|cannot"):
        run_sweep(opts)
    with pytest.raises(SweepError, match="--scheduler 'bogus'"):
        run_sweep(_options(tmp_path, _space(tmp_path), "x", digits_root, scheduler="bogus"))
    with pytest.raises(SweepError, match="cannot start.*DIGITS|CIFAR_10"):
        cifar = tmp_path / "cifar.yaml"
        cifar.write_text("fixed: {db: CIFAR_10, arch: bio-vgg16}\ngrid: {mode: [fa]}\n")
        run_sweep(_options(tmp_path, cifar, "x", tmp_path / "empty-data"))
    assert not storage.exists()


def test_unsatisfiable_resources_are_an_error_at_launch(tmp_path, digits_root, ray_local):
    with pytest.raises(SweepError, match="no node can run a trial needing 1 CPU and 1 GPU"):
        run_sweep(_options(tmp_path, _space(tmp_path), "gpu", digits_root, gpus_per_trial=1))
    assert not (tmp_path / "sweeps" / "gpu").exists()
