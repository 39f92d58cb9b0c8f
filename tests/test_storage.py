"""The storage layer: durable atomic writes, exclusive creation, damaged files,
the sweep layout, the one state summary, the results snapshot's change tokens,
the hostile-manifest refusal of the data cache, and a dead launch's restart."""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from biohash import storage
from biohash.errors import DataError, SweepError
from biohash.storage.summary import summarize_sweep

from s3_server import moto_s3  # noqa: F401  (fixture)


def _fsyncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def record(fd: int) -> None:
        calls.append(fd)
        real(fd)
    monkeypatch.setattr(os, "fsync", record)
    return calls


@pytest.mark.parametrize("kind", ["bytes", "table"])
def test_atomic_writers_fsync_the_file_and_its_folder(kind, tmp_path, monkeypatch):
    calls = _fsyncs(monkeypatch)
    loc = storage.resolve(tmp_path).join("sub", "f")
    if kind == "bytes":
        storage.write_bytes(loc, b"{}")
    else:
        storage.write_table(loc, pa.table({"a": [1]}))
    assert len(calls) >= 2  # the temp file before the rename, the folder after it
    assert os.listdir(tmp_path / "sub") == ["f"]  # no temp file left


def test_create_exclusive_is_exclusive_across_processes(tmp_path):
    target = str(tmp_path / "s" / "sweep.json")
    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        won = pool.starmap(_create, [(target, i) for i in range(8)])
    assert sum(won) == 1
    winner = won.index(True)
    assert json.loads(Path(target).read_text()) == {"who": winner}
    assert os.listdir(tmp_path / "s") == ["sweep.json"]


def _create(path: str, who: int) -> bool:
    return storage.create_exclusive(storage.resolve(path), json.dumps({"who": who}).encode())


def test_create_exclusive_on_s3_is_a_conditional_put(moto_s3):  # noqa: F811
    moto_s3.client().create_bucket(Bucket="excl")
    loc = storage.resolve("excl/s/sweep.json", moto_s3.filesystem())
    assert storage.create_exclusive(loc, b'{"a": 1}')
    assert not storage.create_exclusive(loc, b'{"a": 2}')
    assert storage.read_json(loc, what="t") == {"a": 1}


@pytest.mark.parametrize("content", [b"", b'{"name": "x", "n_tri', b"\x00\x00", b"[1, 2]"])
def test_damaged_json_reads_as_missing_with_one_warning(content, tmp_path, caplog):
    path = tmp_path / "sweep.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="biohash.storage.atomic"):
        assert storage.read_json(storage.resolve(path), what="sweep record") is None
    assert len(caplog.records) == 1 and str(path) in caplog.records[0].getMessage()
    assert storage.read_json(storage.resolve(tmp_path / "nope.json"), what="x") is None


def test_layout_names_every_place(tmp_path):
    sweep = storage.sweep_dir(tmp_path, "s")
    assert storage.sweep_json(sweep).path == str(tmp_path / "s" / "sweep.json")
    assert storage.final_report(sweep, "D-a-0123456789ab").path == \
        str(tmp_path / "s" / "D-a-0123456789ab" / "final.json")
    assert storage.run_dir_copy(sweep, "d", "models", "r").path == str(tmp_path / "s/d/models/r")
    assert storage.snapshot(sweep, "trials").path == \
        str(tmp_path / "s/results/trials/_snapshot.parquet")
    assert storage.trial_id_of_folder(storage.trial_folder_name("D", "a", "0123456789ab")) == \
        "0123456789ab"
    with pytest.raises(Exception, match="unknown results table 'x'"):
        storage.results_dir(sweep, "x")
    uri = storage.resolve("s3://b/p?endpoint_override=h:1").join("s", "sweep.json").uri
    assert uri == "s3://b/p/s/sweep.json?endpoint_override=h:1"


def _trial_row(tid: str, status: str):
    from biohash.config import TrialConfig
    from biohash.results.schema import error_row, trial_row, trials_table

    cfg = TrialConfig.from_dict({"db": "DIGITS", "arch": "cnn-small", "mode": "bp",
                                 "seed": int(tid[-2:], 16)})
    if status == "error":
        return cfg, trials_table([error_row("s", cfg, "boom", code_version="t")])
    return cfg, trials_table([trial_row("s", cfg, {"status": status, "score": 0.5},
                                        code_version="t")])


def test_summary_states_and_rows_lost(tmp_path):
    sweep = storage.sweep_dir(tmp_path, "s")
    storage.write_bytes(storage.sweep_json(sweep), json.dumps({"space": "sp", "n_trials": 6}).encode())
    tids = {}
    for status in ("finished", "early_stopped", "error"):
        cfg, table = _trial_row("00000000000" + str(len(tids)), status)
        storage.write_table(storage.result_file(sweep, "trials", cfg.trial_id), table)
        tids[status] = cfg.trial_id
    running, lost = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    (tmp_path / "s" / f"D-a-{running}").mkdir()
    storage.write_bytes(storage.final_report(sweep, f"D-a-{lost}"), b'{"status": "diverged"}')
    s = summarize_sweep(sweep)
    assert s.counts == {"done": 3, "running": 1, "pending": 1, "failed": 1, "stopped": 0}
    assert s.trials[tids["error"]].detail == "error" and s.trials[lost].detail == "diverged"
    assert s.state == "running" and s.n_rows == 3 and s.missing_rows == [f"D-a-{lost}"]


def test_run_summary_names_trials_without_a_row_and_exits_nonzero(tmp_path, capsys):
    from biohash.orchestrator.commands import print_summary
    from biohash.orchestrator.sweep import _summary

    root = storage.resolve(tmp_path)
    sweep = storage.sweep_dir(root, "s")
    storage.write_bytes(storage.sweep_json(sweep), b'{"n_trials": 1}')
    storage.write_bytes(storage.final_report(sweep, "D-a-cccccccccccc"), b'{"status": "finished"}')
    summary = _summary(None, "s", root, 1)
    assert summary.missing_rows == ("D-a-cccccccccccc",)
    assert print_summary(summary) == 1
    out = capsys.readouterr().out
    assert "D-a-cccccccccccc" in out and f"biohash results repair s --storage {tmp_path}" in out


def test_snapshot_sees_a_same_size_rewrite_in_the_same_second(tmp_path):
    from biohash.results.reader import load_results_table

    sweep = storage.sweep_dir(tmp_path, "s")
    cfg, first = _trial_row("000000000001", "finished")
    path = storage.result_file(sweep, "trials", cfg.trial_id)
    storage.write_table(path, first)
    assert load_results_table(sweep, columns=["status"]).column("status").to_pylist() == ["finished"]
    stat = os.stat(path.path)
    _, second = _trial_row("000000000001", "diverged")  # "diverged" and "finished": same length
    storage.write_table(path, second)
    os.utime(path.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    assert os.stat(path.path).st_size == stat.st_size
    assert load_results_table(sweep, columns=["status"]).column("status").to_pylist() == ["diverged"]


@pytest.mark.parametrize("name", ["../../escaped.npy", "/tmp/abs.npy", "train.images.npy/../x",
                                  "notes.txt"])
def test_hostile_manifest_is_refused_and_nothing_is_written_outside(name, tmp_path):
    from biohash.data.remote import materialize

    remote = tmp_path / "bucket" / "processed" / "DIGITS"
    remote.mkdir(parents=True)
    (remote / "x").write_bytes(b"payload")
    digest = storage.sha256_file(remote / "x")
    (remote / "manifest.json").write_text(json.dumps({"checksums": {name: digest}}))
    before = set(tmp_path.rglob("*"))
    with pytest.raises(DataError, match="not a store file"):
        materialize("DIGITS", (tmp_path / "bucket").as_uri(), tmp_path / "cache")
    assert {p for p in set(tmp_path.rglob("*")) - before if p.is_file()} == set()
    assert not Path("/tmp/abs.npy").exists()


def test_symlink_in_the_cache_is_refused(tmp_path):
    from biohash.data.remote import materialize
    from biohash.data.store import open_store

    bucket = tmp_path / "bucket"
    open_store("DIGITS", bucket)
    cache = tmp_path / "cache"
    local = materialize("DIGITS", bucket.as_uri(), cache)
    victim = local / "processed" / "DIGITS" / "train.labels.npy"
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    victim.unlink()
    victim.symlink_to(outside)
    with pytest.raises(DataError, match="resolves outside the data cache"):
        materialize("DIGITS", bucket.as_uri(), cache)
    assert outside.read_bytes() == b"keep"


def test_damaged_local_manifest_reads_as_not_processed(tmp_path, caplog):
    from biohash.data.store import open_store, read_manifest, store_dir

    open_store("DIGITS", tmp_path)
    manifest = store_dir(tmp_path, "DIGITS") / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])  # truncated
    with caplog.at_level(logging.WARNING):
        assert read_manifest(store_dir(tmp_path, "DIGITS")) is None
    assert "dataset manifest" in caplog.text
    assert open_store("DIGITS", tmp_path).sizes["train"] == 900  # DIGITS is rebuilt


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent("""\
        fixed: {db: DIGITS, arch: cnn-small, loss: DPSH, nbits: 16, bs: 64, ep: 1, pt: 5,
                lr: 1.0e-3, wd: 0.0, weights: none, val_size: 200, val_repeats: 2}
        grid: {mode: [bp]}
        """))
    return path


def test_two_launches_of_one_name_cannot_both_claim_it(tmp_path, digits_root):
    from biohash.orchestrator.sweep import SweepOptions, _claim, _prepare, _sweep_record

    opts, root, space, _ = _prepare(SweepOptions(space=str(_space(tmp_path)), name="x",
                                                 storage=str(tmp_path / "sw"),
                                                 data_root=str(digits_root), mlflow_uri=""))
    record = _sweep_record(opts, root, space)
    assert _claim(root, "x", "d", record).name == "x"
    with pytest.raises(SweepError, match="sweep 'x' already exists.*biohash sweep resume x"):
        _claim(root, "x", "d", record)
    # The default name moves on instead: same second, three launches, three sweeps.
    names = [_claim(root, None, "tiny-20260101-000000", record).name for _ in range(3)]
    assert names == ["tiny-20260101-000000", "tiny-20260101-000000-2", "tiny-20260101-000000-3"]
    from biohash.results.provenance import code_version

    info = json.loads((tmp_path / "sw" / "x" / "sweep.json").read_text())
    assert info["code_version"] == code_version()  # with the git sha, like every Parquet row


@pytest.mark.slow
def test_a_launch_that_died_before_tune_is_restarted_by_resume(tmp_path, digits_root, ray_local):
    from biohash.orchestrator.sweep import (SweepOptions, _claim, _prepare, _sweep_record,
                                            resume_sweep)

    opts, root, space, _ = _prepare(SweepOptions(
        space=str(_space(tmp_path)), name="dead", storage=str(tmp_path / "sw"),
        data_root=str(digits_root), mlflow_uri="", num_cpus=2, verbose=0))
    _claim(root, "dead", "d", _sweep_record(opts, root, space))  # then the launch "died"
    summary = resume_sweep("dead", storage=str(tmp_path / "sw"))
    assert summary.counts == {"done": 1} and summary.exit_status == 0
    assert summarize_sweep(storage.sweep_dir(root, "dead")).state == "done"
