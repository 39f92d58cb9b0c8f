"""The trial <-> driver contract: one definition, every key list derived from it; the
trainable's end (final.json, then its local checkpoints go); ``results repair``."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from biohash import contract
from biohash.config import TrialConfig
from biohash.contract import (BOOKKEEPING, EVAL_FOLDS, FINAL_METRICS, OUTCOME_COLUMNS, TIMES,
                              FinalReport, Runtime, TrialRuntime)
from biohash.errors import ConfigError
from biohash.metrics import REPORTED_METRICS


def _report(**kw) -> FinalReport:
    metrics = {fold: {m: 0.1 * (i + 1) for i, m in enumerate(REPORTED_METRICS)}
               for fold in EVAL_FOLDS}
    metrics["val"] = {**metrics["val"], "mAP": 0.42}
    return FinalReport(**{"trial_id": "abc", "status": "finished", "best_epoch": 2,
                          "epochs_run": 3, "run_dir": "/runs/x", "device": "cpu",
                          "precision": "fp32", "score": 0.5, "metrics": metrics,
                          "times": {"train": 1.0, "predict": 0.25, "eval": 0.5},
                          "history": ({"phase": "train", "epoch": 1, "val_mAP": 0.3},), **kw})


# ----------------------------------------------------------------- derived key lists
def test_parquet_outcome_columns_are_the_contracts():
    from biohash.results.schema import TRIALS_SCHEMA

    names = TRIALS_SCHEMA.names
    start = names.index("status")
    assert tuple(names[start:start + len(OUTCOME_COLUMNS)]) == tuple(n for n, _ in OUTCOME_COLUMNS)
    # Every value of a final report that a row keeps has its column.
    wire = _report().finish().to_dict()
    kept = set(wire) - set(BOOKKEEPING) - {"val_mAP"}
    assert kept <= set(names)


def test_mlflow_and_tune_keys_come_from_the_contract():
    from biohash.results import _tune, mlflow_log, schema
    from biohash.pipeline import evaluate

    wire = _report().to_dict()
    numbers = [k for k, v in wire.items() if isinstance(v, float | int) and k not in BOOKKEEPING
               and k != contract.TUNE_METRIC]
    assert sorted(numbers) == sorted(contract.FINAL_NUMBERS)
    assert all(isinstance(wire[k], str) for k in contract.FINAL_TEXTS)
    assert set(BOOKKEEPING) <= _tune._NOT_METRICS
    assert _tune.FINAL == wire["phase"] == contract.FINAL
    assert schema.FINAL_METRICS is FINAL_METRICS and schema.TIMES is TIMES
    assert schema.FOLDS is EVAL_FOLDS is evaluate.EVAL_FOLDS
    assert mlflow_log.DATA_PREFIX == contract.DATA_PREFIX


def test_predict_folds_are_the_data_stores_in_h2qs_order():
    from biohash.data.store import FOLDS as STORE_FOLDS
    from biohash.pipeline.predict import FOLDS

    assert sorted(FOLDS) == sorted(STORE_FOLDS) and FOLDS == ("train", "val", "query", "database")


def test_contract_imports_without_torch_ray_or_mlflow():
    code = ("import sys, biohash.contract; "
            "print([m for m in ('torch', 'ray', 'mlflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------ reports
def test_final_report_wire_form_round_trips():
    report = _report()
    wire = report.to_dict()
    assert wire["phase"] == "final" and wire["epoch"] == 3 and "finished_at" not in wire
    assert wire["val_mAP"] == wire["val/mAP"] == 0.42
    assert wire["time/total_s"] == 1.75 and json.loads(wire["history"])[0]["epoch"] == 1
    assert FinalReport.from_dict(json.loads(json.dumps(wire))) == report
    done = report.finish(run_dir="s3://b/s/t/models/run",
                         now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert done.to_dict()["finished_at"] == "2026-01-02T00:00:00+00:00"
    assert done.run_dir == "s3://b/s/t/models/run" and report.finish().run_dir == "/runs/x"


def test_final_report_from_a_bad_dict_names_the_problem():
    wire = _report().to_dict()
    with pytest.raises(ConfigError, match="not a final report"):
        FinalReport.from_dict({**wire, "phase": "train"})
    del wire["query/mAP"]
    with pytest.raises(ConfigError, match=r"final.json: final report without key 'query/mAP'"):
        FinalReport.from_dict(wire, source="final.json")


# ------------------------------------------------------------------------ runtime
def test_trial_runtime_dict_form_round_trips_and_accepts_the_old_form():
    rt = TrialRuntime(Runtime(data_root="/data"), storage="/sweeps", checkpoint_interval_s=5.0,
                      test_crash_after="abc:2")
    assert TrialRuntime.from_dict(rt.to_dict()) == rt and TrialRuntime.from_dict(rt) == rt
    old = {"data_root": "/data", "storage": "/sweeps", "checkpoint_interval_s": 5.0,
           "crash_once": "abc:2"}  # what sweeps started before the contract hold
    assert TrialRuntime.from_dict(old) == rt and rt.crash_point == ("abc", 2)
    resumed = TrialRuntime.from_dict(old, storage="s3://b/p", data_root="/other")
    assert resumed.storage == "s3://b/p" and resumed.runtime.data_root == "/other"
    assert TrialRuntime.from_dict(None) == TrialRuntime()


@pytest.mark.parametrize("data, match", [
    ({"crash_onec": "a:1"}, r"unknown runtime key 'crash_onec'; allowed: data_root, .*storage"),
    ({"checkpoint_interval_s": float("nan")}, r"checkpoint_interval_s nan; allowed: a finite"),
    ({"checkpoint_interval_s": -1}, r"checkpoint_interval_s -1"),
    ({"test_crash_after": "abc"}, r"test_crash_after 'abc'; allowed: '<trial_id>:<epoch>'"),
])
def test_trial_runtime_refuses_bad_input(data, match):
    with pytest.raises(ConfigError, match=match):
        TrialRuntime.from_dict(data)


# ---------------------------------------------- the trainable's end, and repair
@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, digits_root, ray_local):
    """Two one-epoch trials through the real trainable and the Parquet sink:
    seed 0 with sweep storage, seed 1 without (results stay local)."""
    from ray import tune

    from biohash.results.parquet_sink import ParquetResultsCallback
    from biohash.trainables import trial_dirname, trial_trainable

    tmp = tmp_path_factory.mktemp("contract")
    storage = str(tmp / "sweeps")
    cfgs = [TrialConfig(exp="t", db="DIGITS", loss="DPSH", nbits=16, arch="cnn-small", bs=64,
                        ep=1, pt=5, lr=1e-3, wd=0.0, weights="none", val_size=200,
                        val_repeats=2, seed=seed) for seed in (0, 1)]
    with_storage = TrialRuntime(Runtime(data_root=str(digits_root)), storage=storage).to_dict()
    without = TrialRuntime(Runtime(data_root=str(digits_root))).to_dict()
    tuner = tune.Tuner(
        trial_trainable,
        param_space={"trial": tune.grid_search([c.to_dict() for c in cfgs]), "sweep": "c",
                     "runtime": tune.sample_from(
                         lambda spec: with_storage if spec.config["trial"]["seed"] == 0
                         else without)},
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="c", storage_path=storage, verbose=0,
                                  callbacks=[ParquetResultsCallback(storage, "c")]))
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    return Path(storage), cfgs


def _row(storage: Path, table: str, trial_id: str) -> list[dict]:
    return pq.read_table(storage / "c" / "results" / table / f"{trial_id}.parquet").to_pylist()


@pytest.mark.slow
def test_a_finished_trial_removes_its_local_checkpoints_only_once_stored(finished_sweep):
    storage, (stored, local) = finished_sweep
    row_stored = _row(storage, "trials", stored.trial_id)[0]
    row_local = _row(storage, "trials", local.trial_id)[0]
    final = json.loads(next((storage / "c").glob(f"*-{stored.trial_id}/final.json")).read_text())
    assert final["run_dir"] == row_stored["run_dir"] and Path(final["run_dir"]).is_relative_to(storage)
    assert (Path(final["run_dir"]) / "query-prediction_mAP.json").is_file()
    # Without storage the trial's run directory is its only copy: checkpoints stay.
    local_run = Path(row_local["run_dir"])
    assert (local_run / "checkpoints" / "latest.pt").is_file()
    assert not list((storage / "c").glob(f"*-{local.trial_id}/final.json"))
    # With storage: the same local layout, minus checkpoints/.
    trials_root = next(p for p in local_run.parents if p.name.endswith(local.trial_id)).parent
    stored_local = trials_root / f"{stored.db}-{stored.arch}-{stored.trial_id}"
    assert (stored_local / "models").is_dir() and list(stored_local.rglob("config.json"))
    assert not list(stored_local.rglob("checkpoints"))


@pytest.mark.slow
def test_repair_rebuilds_a_lost_row_identically_and_leaves_others_alone(finished_sweep):
    from biohash.cli import main
    from biohash.results.repair import repair

    storage, (stored, local) = finished_sweep
    before = {t: _row(storage, t, stored.trial_id) for t in ("trials", "history")}
    kept = storage / "c" / "results" / "trials" / f"{local.trial_id}.parquet"
    kept_mtime = kept.stat().st_mtime_ns
    for table in ("trials", "history"):
        (storage / "c" / "results" / table / f"{stored.trial_id}.parquet").unlink()
    report = repair(str(storage), "c")
    assert report.rebuilt == [stored.trial_id] and report.present == [local.trial_id]
    assert not report.failed
    assert {t: _row(storage, t, stored.trial_id) for t in before} == before
    assert kept.stat().st_mtime_ns == kept_mtime
    # Idempotent, and the CLI verb says so.
    assert main(["results", "repair", "c", "--storage", str(storage)]) == 0
    assert repair(str(storage), "c").rebuilt == []
