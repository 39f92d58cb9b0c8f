"""Sinks end to end: a real Ray Tune sweep, a real MLflow server queried over REST, resume, outage."""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import requests  # noqa: E402
from ray import tune  # noqa: E402

from biohash.analysis.ui import start_ui, wait_healthy  # noqa: E402
from biohash.config import TrialConfig  # noqa: E402
from biohash.results.backfill import backfill  # noqa: E402
from biohash.results.mlflow_sink import MlflowSweepCallback  # noqa: E402
from biohash.results.parquet_sink import ParquetResultsCallback  # noqa: E402
from biohash.results.reader import load_history, load_results  # noqa: E402
from biohash.results.schema import FINAL_METRICS  # noqa: E402
from biohash.utils import free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
# Workers cannot import this test module by name: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

EPOCHS = 3


def final_metrics(cfg: TrialConfig) -> dict:
    score = cfg.lr * 1e4
    return {"status": "finished", "best_epoch": EPOCHS, "epochs_run": EPOCHS, "score": score,
            **{k: score / 2 for k in FINAL_METRICS}, "time/train_s": 1.0, "time/predict_s": 0.1,
            "time/eval_s": 0.1, "time/total_s": 1.2, "hw/device": "cpu", "hw/precision": "fp32"}


def trainable(config: dict) -> None:
    """Reports per the trainable contract; raises when its fail marker file exists."""
    cfg = TrialConfig.from_dict(config["trial"])
    run_dir = Path(config["runs"]) / cfg.trial_id
    run_dir.mkdir(parents=True, exist_ok=True)
    hist = []
    for epoch in range(1, EPOCHS + 1):
        report = {"phase": "train", "epoch": epoch, "train/loss": 1.0 / epoch,
                  "train/main": 0.9 / epoch, "val_mAP": 0.1 * epoch, "best_val_mAP": 0.1 * epoch,
                  "time/epoch_s": 0.01, "align/features.0": 30.0 + epoch,
                  "align/hash": 50.0 + epoch, "trial_id": cfg.trial_id}
        hist.append(report)
        tune.report(report)
        if epoch == 2 and Path(config["fail_marker"]).exists() and cfg.lr > 1.5e-5:
            raise RuntimeError("injected failure")
    (run_dir / "query-prediction_mAP.json").write_text(json.dumps({"mAP": 0.5}))
    tune.report({"phase": "final", "trial_id": cfg.trial_id, **final_metrics(cfg),
                 "run_dir": str(run_dir), "history": json.dumps(hist), "epoch": EPOCHS})


CONFIGS = [TrialConfig(arch="bio-alexnet", lr=lr) for lr in (1e-5, 2e-5)]


def run_sweep(tmp: Path, sweep: str, uri: str, *, fail: bool) -> None:
    marker = tmp / "fail"
    marker.touch() if fail else marker.unlink(missing_ok=True)
    storage = str(tmp / "sweeps")
    callbacks = [ParquetResultsCallback(storage, sweep),
                 MlflowSweepCallback(uri, sweep=sweep, space="test", storage=storage)]
    tuner = tune.Tuner(trainable, param_space={
        "trial": tune.grid_search([c.to_dict() for c in CONFIGS]), "sweep": sweep,
        "fail_marker": str(marker), "runs": str(tmp / "runs")},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name=sweep, storage_path=storage, verbose=0, callbacks=callbacks))
    tuner.fit()




@pytest.fixture(scope="module")
def ray_local(server_proc, ray_local):
    """The session's local Ray (conftest), started after the MLflow server."""
    yield ray_local


@pytest.fixture(scope="module")
def server_proc(tmp_path_factory):
    """A real ``mlflow server`` on a SQLite store (started like ``biohash ui``).

    Started before Ray so that both warm up at once; ``server`` waits for it.
    """
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    port = free_port()
    proc = start_ui(f"sqlite:///{db}", port, quiet=True)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()  # the whole server process group


@pytest.fixture(scope="module")
def server(server_proc, ray_local):
    proc, url = server_proc
    wait_healthy(url, proc, timeout_s=120)
    return url


def search(url: str, filter_string: str) -> list[dict]:
    exp = requests.get(f"{url}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "biohash"}, timeout=10).json()
    body = {"experiment_ids": [exp["experiment"]["experiment_id"]], "filter": filter_string,
            "max_results": 1000}
    resp = requests.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json().get("runs", [])


def tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def best_runs(url: str, sweep: str) -> list[dict]:
    """What the UI's search box finds for the best-runs filter, within one sweep."""
    return search(url, f'tags.biohash.best = "true" AND tags.`biohash.sweep` = \'{sweep}\'')


def sweep_runs(url: str, sweep: str) -> tuple[list[dict], list[dict]]:
    runs = search(url, f"tags.`biohash.sweep` = '{sweep}'")
    parents = [r for r in runs if tags(r).get("biohash.role") == "sweep"]
    return parents, [r for r in runs if tags(r).get("biohash.role") == "trial"]


def test_sweep_error_then_resume_keeps_one_run_per_trial(ray_local, server, tmp_path):
    ok, bad = CONFIGS
    run_sweep(tmp_path, "grid", server, fail=True)
    df = load_results([tmp_path / "sweeps" / "grid"]).set_index("trial_id")
    assert df.loc[ok.trial_id, "status"] == "finished"
    assert df.loc[bad.trial_id, "status"] == "error"
    assert "injected failure" in df.loc[bad.trial_id, "error"]
    parents, children = sweep_runs(server, "grid")
    by_trial = {tags(r)["biohash.trial_id"]: r for r in children}
    assert by_trial[bad.trial_id]["info"]["status"] == "FAILED"
    # The sweep's answer so far: the only finished config is the best one.
    assert {tags(r)["biohash.trial_id"] for r in best_runs(server, "grid")} == {ok.trial_id}
    first_ids = {t: r["info"]["run_id"] for t, r in by_trial.items()}

    # Resume: a second Tuner with fresh callbacks (new driver state), failure gone.
    run_sweep(tmp_path, "grid", server, fail=False)
    parents, children = sweep_runs(server, "grid")
    assert len(parents) == 1 and len(children) == 2
    parent_id = parents[0]["info"]["run_id"]
    assert {tags(r)["mlflow.parentRunId"] for r in children} == {parent_id}
    assert {tags(r)["biohash.trial_id"]: r["info"]["run_id"] for r in children} == first_ids
    assert tags(parents[0])["biohash.space"] == "test" and tags(parents[0])["biohash.code_version"]
    # The answer once both finished: the better config (higher lr) took the best tag over.
    parent_metrics = {m["key"]: m["value"] for m in parents[0]["data"]["metrics"]}
    assert parent_metrics == pytest.approx({f"best/{bad.db}/{bad.nbits}/fa/score": bad.lr * 1e4})
    assert {tags(r)["biohash.trial_id"] for r in best_runs(server, "grid")} == {bad.trial_id}
    arts = requests.get(f"{server}/api/2.0/mlflow/artifacts/list", timeout=10, params={
        "run_id": parent_id}).json().get("files", [])
    assert {"best.md", "best.csv", "plots"} <= {a["path"] for a in arts}
    for run in children:
        cfg = next(c for c in CONFIGS if c.trial_id == tags(run)["biohash.trial_id"])
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert run["info"]["status"] == "FINISHED" and tags(run)["biohash.status"] == "finished"
        # Named as in Tune's progress table; the run-directory name is a tag.
        assert run["info"]["run_name"] == f"CIFAR_10/bio-alexnet/fa/{cfg.nbits}b/{cfg.loss}/s0"
        assert tags(run)["biohash.run_name"] == cfg.run_name
        assert metrics["score"] == pytest.approx(cfg.lr * 1e4)
        assert metrics["query/mAP_at_5000"] == pytest.approx(cfg.lr * 1e4 / 2)
        assert params["lr"] == str(cfg.lr) and params["arch"] == "bio-alexnet"
        assert tags(run)["hw/device"] == "cpu" and "status" not in metrics
        history = requests.get(f"{server}/api/2.0/mlflow/metrics/get-history", timeout=10, params={
            "run_id": run["info"]["run_id"], "metric_key": "val_mAP"}).json()["metrics"]
        # One point per epoch even though the failed trial re-reported epochs 1-2.
        assert sorted(m["step"] for m in history) == [1, 2, 3]
        arts = requests.get(f"{server}/api/2.0/mlflow/artifacts/list", timeout=10, params={
            "run_id": run["info"]["run_id"]}).json().get("files", [])
        assert {"trial_config.json", "eval"} <= {a["path"] for a in arts}

    # Parquet equals the trials' final reports; the errored row was overwritten.
    df = load_results([tmp_path / "sweeps"]).set_index("trial_id")
    assert len(df) == 2 and set(df["status"]) == {"finished"}
    for cfg in CONFIGS:
        expected = final_metrics(cfg)
        for key in ("score", "query/mAP", "val/P_at_1000", "time/total_s", "best_epoch"):
            assert df.loc[cfg.trial_id, key] == pytest.approx(expected[key])
    hist = load_history([tmp_path / "sweeps" / "grid"])
    val = hist[(hist["key"] == "val_mAP") & (hist["trial_id"] == bad.trial_id)]
    assert sorted(val["epoch"]) == [1, 2, 3]


def test_mlflow_down_sweep_completes_then_backfill(ray_local, server, tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with caplog.at_level(logging.WARNING, logger="biohash.results.mlflow_sink"):
        run_sweep(tmp_path, "offline", dead, fail=False)
    warnings = [r for r in caplog.records if "sync-mlflow offline" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not per report
    assert len(load_results([tmp_path / "sweeps" / "offline"])) == 2
    assert sweep_runs(server, "offline") == ([], [])

    report = backfill(str(tmp_path / "sweeps"), "offline", server)
    assert sorted(report.updated) == sorted(c.trial_id for c in CONFIGS)
    parents, children = sweep_runs(server, "offline")
    assert len(parents) == 1 and len(children) == 2
    assert parents[0]["info"]["status"] == "FINISHED"  # created by the backfill: closed by it
    for run in children:
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert {"score", "val_mAP", "align/hash", "train/loss"} <= set(metrics)
        assert run["info"]["status"] == "FINISHED"
    again = backfill(str(tmp_path / "sweeps"), "offline", server)
    assert again.updated == [] and len(again.skipped) == 2
    assert len(sweep_runs(server, "offline")[1]) == 2
