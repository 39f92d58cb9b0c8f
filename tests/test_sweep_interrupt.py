"""An interrupted ``biohash sweep run`` (Ctrl-C, SIGTERM) tells the truth and says how to go on.

Real subprocesses: the sweep is signalled after at least one trial has its
Parquet row; it must exit 130 (SIGINT) / 143 (SIGTERM), print how many trials
done and how many did not, print the biohash command that continues it
(not Ray's ``Tuner.restore(...)``), and never count a trial without a final
status as done; ``sweep resume`` then completes it.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from biohash.cli import main

pytestmark = pytest.mark.slow

MODES = ("bp", "fa", "usf")


def _space(tmp_path: Path, modes: tuple[str, ...] = MODES) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(f"""\
        description: DIGITS trials for interrupt tests
        fixed: {{db: DIGITS, arch: bio-cnn-small, loss: DPSH, nbits: 16, bs: 64, ep: 2, pt: 5,
                lr: 1.0e-3, wd: 0.0, weights: none, val_size: 200, val_repeats: 2}}
        grid: {{mode: [{", ".join(modes)}]}}
        """))
    return path


def _epochs_reported(sweep: Path) -> bool:
    """Whether some trial has reported an epoch (Tune's result.json, written by the driver)."""
    return any(p.stat().st_size for p in sweep.glob("*/result.json"))


def _rows(sweep: Path) -> dict[str, dict]:
    files = sorted(f for f in (sweep / "results" / "trials").glob("*.parquet")
                   if not f.name.startswith(("_", ".")))
    rows = [pq.read_table(f).to_pylist()[0] for f in files]
    return {r["trial_id"]: r for r in rows}


def _launch(args: list[str], log: Path, cwd: Path, **env: str) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if k not in ("BIOHASH_STORAGE",)}
    full_env.update(RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1", **env)
    # Own session: the signal reaches the driver (and, for the Ctrl-C case, its
    # whole process group, like a terminal does), never pytest.
    return subprocess.Popen([sys.executable, "-m", "biohash.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                            start_new_session=True)


def _interrupt_when(ready, proc: subprocess.Popen, log: Path, signum: int, group: bool) -> int:
    """Wait until ``ready()``, send ``signum``; returns the exit status."""
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not ready():
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()[-3000:]
        assert ready(), "the sweep made no progress in time: " + log.read_text()[-3000:]
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        return proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _check_summary(out: str, signame: str, n_done: int, n: int, hint: str) -> None:
    assert f"interrupted ({signame}): {n_done} of {n} done, {n - n_done} pending" \
        in out, out[-3000:]
    assert f"continue with: {hint}\n" in out, out[-3000:]
    assert "Tuner.restore" not in out and f"{n} trials ({n} done)" not in out


def test_ctrl_c_reports_the_truth_and_resume_completes_the_sweep(
        tmp_path, digits_root, monkeypatch, capsys):
    storage, sweep = tmp_path / "elsewhere", tmp_path / "elsewhere" / "cc"
    # One CPU runs the trials one at a time, so some are still to run at the signal.
    proc = _launch(["sweep", "run", "--space", str(_space(tmp_path)), "--name", "cc",
                    "--storage", str(storage), "--data-root", str(digits_root),
                    "--mlflow-uri", "", "--num-cpus", "1", "--tune-verbose", "0"],
                   tmp_path / "run.log", tmp_path)
    status = _interrupt_when(lambda: _rows(sweep), proc, tmp_path / "run.log", signal.SIGINT,
                             group=True)
    out = (tmp_path / "run.log").read_text()
    done_before = _rows(sweep)
    assert status == 130, out[-3000:]
    assert 1 <= len(done_before) < len(MODES)
    _check_summary(out, "SIGINT", len(done_before), len(MODES),
                   f"biohash sweep resume cc --storage {storage}")
    # `sweep status` from storage alone: the cut-off trials are not done.
    monkeypatch.delenv("BIOHASH_STORAGE", raising=False)
    assert main(["sweep", "status", "cc", "--storage", str(storage)]) == 0
    line = capsys.readouterr().out
    done = int(m.group(1)) if (m := re.search(r"(\d+) done", line)) else 0
    assert done == len(done_before) and "pending" in line, line

    # Resume with another data root (an empty folder: the embedded DIGITS is
    # processed into it on first use), which proves --data-root is honoured.
    other_data = tmp_path / "other-data"
    resume = _launch(["sweep", "resume", "cc", "--storage", str(storage),
                      "--data-root", str(other_data), "--num-cpus", "2"],
                     tmp_path / "resume.log", tmp_path)
    assert resume.wait(timeout=400) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    n = len(MODES)
    assert f"sweep cc: {n} trials ({n} done)" in (tmp_path / "resume.log").read_text()
    after = _rows(sweep)
    assert len(after) == n and all(r["status"] == "finished" for r in after.values())
    for tid, row in done_before.items():  # finished trials were not run again
        assert after[tid]["finished_at"] == row["finished_at"]
    assert (other_data / "processed" / "DIGITS" / "manifest.json").is_file()


def test_sigterm_exits_143_with_the_resume_command_for_the_default_storage(
        tmp_path, digits_root):
    # No --storage: the default `sweeps` in the working directory, so the hint is
    # the bare command. Signalled while the first trial is mid-run.
    sweep = tmp_path / "sweeps" / "t"
    proc = _launch(["sweep", "run", "--space", str(_space(tmp_path, ("bp", "fa"))),
                    "--name", "t", "--data-root", str(digits_root), "--mlflow-uri", "",
                    "--num-cpus", "1", "--tune-verbose", "0"], tmp_path / "run.log", tmp_path)
    status = _interrupt_when(lambda: _epochs_reported(sweep), proc, tmp_path / "run.log",
                             signal.SIGTERM, group=False)
    out = (tmp_path / "run.log").read_text()
    assert status == 143, out[-3000:]
    _check_summary(out, "SIGTERM", len(_rows(sweep)), 2, "biohash sweep resume t")
