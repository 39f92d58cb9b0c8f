"""Parquet results: schema derived from TrialConfig, atomic per-trial files, reading many sweeps."""
from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from biohash.config import FIELDS, TrialConfig
from biohash.errors import ResultsError
from biohash.results.reader import SNAPSHOT, load_history, load_results
from biohash.results.schema import (FINAL_METRICS, HISTORY_SCHEMA, SCHEMA_VERSION, TIMES,
                                    TRIALS_SCHEMA, VERSION_KEY, error_row, history_rows,
                                    history_table, trial_row, trials_table)
from biohash.storage import list_sweeps, resolve_sweeps, write_table
from s3_server import moto_s3  # noqa: F401  (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def final_report(score: float, status: str = "finished") -> dict:
    return {"phase": "final", "status": status, "best_epoch": 2, "epochs_run": 3, "score": score,
            **{k: score / 2 for k in FINAL_METRICS}, **{k: 1.5 for k in TIMES},
            "hw/device": "cpu", "hw/precision": "fp32", "run_dir": "/runs/x"}


def history(n: int = 3) -> list[dict]:
    return [{"phase": "train", "epoch": e, "train/loss": 1 / e, "val_mAP": e / 10,
             "align/features.0": 40.0 + e, "trial_id": "x"} for e in range(1, n + 1)]


def write_trial(root, sweep: str, cfg: TrialConfig, score: float, *, status="finished",
                fs=None) -> None:
    fs = fs or pafs.LocalFileSystem()
    base = f"{root}/{sweep}/results"
    write_table(fs, f"{base}/trials/{cfg.trial_id}.parquet",
                trials_table([trial_row(sweep, cfg, final_report(score, status), code_version="t")]))
    write_table(fs, f"{base}/history/{cfg.trial_id}.parquet",
                history_table(history_rows(sweep, cfg, history())))


def test_schema_columns_follow_trial_config_fields():
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    for f in FIELDS:
        assert TRIALS_SCHEMA.field(f.name).type == types[f.type], f.name
    for name in ("schema_version", "sweep", "trial_id", "status", "score", "best_epoch",
                 "query/mAP_at_5000", "val/P_at_1000", "time/total_s", "hw/device", "finished_at"):
        assert name in TRIALS_SCHEMA.names
    assert TRIALS_SCHEMA.metadata[VERSION_KEY] == str(SCHEMA_VERSION).encode()
    assert HISTORY_SCHEMA.field("epoch").type == pa.int32()


def test_rows_round_trip_and_retry_overwrites(tmp_path):
    a, b = TrialConfig(lr=1e-4), TrialConfig(lr=2e-4, arch="bio-alexnet", mode="usf")
    write_trial(tmp_path, "s1", a, 0.4)
    write_trial(tmp_path, "s1", b, 0.6)
    df = load_results([tmp_path / "s1"])
    assert sorted(df["trial_id"]) == sorted([a.trial_id, b.trial_id])
    row = df.set_index("trial_id").loc[b.trial_id]
    assert row["score"] == 0.6 and row["query/mAP"] == 0.3 and row["rule"] == "usf"
    assert df.set_index("trial_id").loc[a.trial_id, "rule"] == "bp"  # plain arch = backprop
    assert row["lr"] == 2e-4 and row["nbits"] == 32 and not row["no_cube"]
    # A retry rewrites the same file: still one row per trial, new value visible (snapshot refreshed).
    time.sleep(0.01)
    write_trial(tmp_path, "s1", b, 0.9)
    df = load_results([tmp_path / "s1"])
    assert len(df) == 2 and df.set_index("trial_id").loc[b.trial_id, "score"] == 0.9
    assert (tmp_path / "s1/results/trials" / SNAPSHOT).exists()
    assert not [p for p in (tmp_path / "s1/results/trials").iterdir() if p.name.startswith(".")]
    hist = load_history([tmp_path / "s1"])
    assert len(hist) == 2 * 3 * 3  # trials x epochs x keys (phase/trial_id/epoch are not values)
    assert set(hist["key"]) == {"train/loss", "val_mAP", "align/features.0"}


def test_history_keeps_last_report_of_a_repeated_epoch():
    cfg = TrialConfig()
    cols = history_rows("s", cfg, [{"epoch": 1, "val_mAP": 0.1}, {"epoch": 1, "val_mAP": 0.2}])
    assert cols["epoch"] == [1] and cols["value"] == [0.2]


def test_error_row_has_null_metrics(tmp_path):
    cfg = TrialConfig()
    write_table(pafs.LocalFileSystem(), f"{tmp_path}/s/results/trials/{cfg.trial_id}.parquet",
                trials_table([error_row("s", cfg, "ValueError: boom", code_version="t")]))
    row = load_results([tmp_path]).iloc[0]
    assert row["status"] == "error" and row["error"] == "ValueError: boom"
    assert row[["score", "query/mAP"]].isna().all()


def test_many_sweeps_from_storage_root_and_names(tmp_path):
    for sweep in ("s1", "s2"):
        write_trial(tmp_path, sweep, TrialConfig(seed=1), 0.5)
    assert list_sweeps(tmp_path) == ["s1", "s2"]
    assert set(load_results([tmp_path])["sweep"]) == {"s1", "s2"}
    assert len(load_results(resolve_sweeps(tmp_path, ["s1", "s2"]))) == 2
    with pytest.raises(ResultsError, match=r"unknown sweep 'nope'.*sweeps found: s1, s2"):
        resolve_sweeps(tmp_path, ["nope"])


def test_no_results_yet_and_missing_folder(tmp_path):
    (tmp_path / "s0").mkdir()
    (tmp_path / "s0/sweep.json").write_text(json.dumps({"name": "s0", "n_trials": 2}))
    with pytest.raises(ResultsError, match="no results yet"):
        load_results([tmp_path / "s0"])
    with pytest.raises(ResultsError, match="no such sweep or storage folder"):
        load_results([tmp_path / "missing"])
    write_trial(tmp_path, "s1", TrialConfig(), 0.5)
    with pytest.raises(ResultsError, match="unknown trials column"):
        load_results([tmp_path], columns=["nope"])


def test_newer_schema_version_is_refused_naming_the_file(tmp_path):
    write_trial(tmp_path, "s1", TrialConfig(), 0.5)
    cfg = TrialConfig(seed=7)
    row = trial_row("s1", cfg, final_report(0.1), code_version="t")
    row["schema_version"] = SCHEMA_VERSION + 1
    table = trials_table([row]).replace_schema_metadata({VERSION_KEY: b"2"})
    path = tmp_path / "s1/results/trials" / f"{cfg.trial_id}.parquet"
    pq.write_table(table, path)
    with pytest.raises(ResultsError, match=rf"{cfg.trial_id}\.parquet.*version 2.*\(1\)"):
        load_results([tmp_path / "s1"])


@pytest.fixture(scope="module")
def s3(moto_s3):  # noqa: F811
    """The suite's one S3 server (``s3_server.moto_s3``) with a bucket, as a pyarrow filesystem."""
    moto_s3.client().create_bucket(Bucket="bucket")
    return moto_s3.filesystem()


def test_s3_storage_write_and_read(s3):
    cfg = TrialConfig(nbits=64)
    write_trial("bucket/prefix", "s3sweep", cfg, 0.7, fs=s3)
    df = load_results(["s3://bucket/prefix"], filesystem=s3)
    assert list(df["trial_id"]) == [cfg.trial_id] and df["score"].iloc[0] == 0.7
    assert list_sweeps("s3://bucket/prefix", filesystem=s3) == ["s3sweep"]
    assert len(load_history(["s3://bucket/prefix/s3sweep"], filesystem=s3)) == 9
