"""Where a sweep's files land: the default relative ``--storage``, ``s3://`` storage,
environment defaults and bad storage, all through ``biohash.cli.main``.

The relative-storage test is the one a new user runs: no ``--storage``, from a
plain working directory; every trial's ``final.json``, run directory, eval JSON,
Parquet ``run_dir`` and MLflow eval artifacts must be under ``./sweeps/<sweep>/``,
not in Ray's per-trial working directory.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from biohash.cli import main
from s3_server import moto_s3  # noqa: F401  (fixture)

SPACES = Path(__file__).resolve().parents[1] / "biohash" / "search_spaces"


def _demo_slice(tmp_path: Path) -> Path:
    """The shipped ``demo`` space cut to 2 trials (bp, usf) of 2 epochs, to keep CI fast."""
    space = yaml.safe_load((SPACES / "demo.yaml").read_text())
    space["fixed"].update(ep=2, val_repeats=2)
    space["grid"] = {"loss": ["DPSH"], "nbits": [16], "mode": ["bp", "usf"]}
    path = tmp_path / "demo-slice.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def _trial_rows(sweep: Path) -> list[dict]:
    files = sorted(f for f in (sweep / "results" / "trials").glob("*.parquet")
                   if not f.name.startswith(("_", ".")))
    return [pq.read_table(f).to_pylist()[0] for f in files]


def _mlflow_eval_artifacts(uri: str, sweep: str) -> dict[str, dict[str, bytes]]:
    """``{trial_id: {artifact name: bytes}}`` of the sweep's child runs, read from MLflow."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("biohash")
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`biohash.role` = 'trial' AND tags.`biohash.sweep` = '{sweep}'"))
    out = {}
    for run in runs:
        files = {}
        for art in client.list_artifacts(run.info.run_id, "eval"):
            local = download_artifacts(run_id=run.info.run_id, artifact_path=art.path,
                                       tracking_uri=uri)
            files[Path(art.path).name] = Path(local).read_bytes()
        out[run.data.tags["biohash.trial_id"]] = files
    return out


@pytest.mark.slow
def test_default_storage_is_the_working_directory_for_every_file(
        tmp_path, monkeypatch, capsys, digits_root, ray_local):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BIOHASH_STORAGE", raising=False)
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["sweep", "run", "--space", str(_demo_slice(tmp_path)), "--name", "rel",
                 "--data-root", str(digits_root), "--mlflow-uri", mlflow_uri,
                 "--tune-verbose", "0"]) == 0
    sweep = tmp_path / "sweeps" / "rel"
    assert f"2 trials (2 done) in {sweep}" in capsys.readouterr().out
    rows = _trial_rows(sweep)
    assert len(rows) == 2
    artifacts = _mlflow_eval_artifacts(mlflow_uri, "rel")
    for row in rows:
        trial_dir = next(sweep.glob(f"*-{row['trial_id']}"))
        final = json.loads((trial_dir / "final.json").read_text())
        assert final["status"] == "finished" and final["run_dir"] == row["run_dir"]
        run_dir = Path(row["run_dir"])
        assert run_dir.is_absolute() and run_dir.is_relative_to(trial_dir), row["run_dir"]
        query_json = (run_dir / "query-prediction_mAP.json").read_bytes()
        assert json.loads(query_json)["score"] == pytest.approx(row["score"])
        assert artifacts[row["trial_id"]]["query-prediction_mAP.json"] == query_json
        assert set(artifacts[row["trial_id"]]) == {p.name for p in
                                                   run_dir.glob("*-prediction_mAP.json")}
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["storage"] == str(tmp_path / "sweeps")
    assert info["options"]["data_root"] == str(digits_root)


@pytest.mark.slow
def test_s3_storage_gets_final_json_run_dirs_and_mlflow_eval_artifacts(
        tmp_path, capsys, digits_root, ray_local, moto_s3):  # noqa: F811
    moto_s3.client().create_bucket(Bucket="biohash-sweeps")
    # Credentials and endpoint in the address itself: the trials' workers (a Ray
    # started earlier, without the test's AWS variables) open the same bucket.
    storage = (f"s3://test:test@biohash-sweeps/sweeps?endpoint_override=127.0.0.1:"
               f"{moto_s3.port}&scheme=http&region=us-east-1&allow_delayed_open=true")
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["sweep", "run", "--space", str(_demo_slice(tmp_path)), "--name", "s3",
                 "--storage", storage, "--data-root", str(digits_root),
                 "--mlflow-uri", mlflow_uri, "--tune-verbose", "0"]) == 0
    assert "2 trials (2 done)" in capsys.readouterr().out
    s3 = moto_s3.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="biohash-sweeps")["Contents"]}
    finals = sorted(k for k in keys if k.endswith("/final.json"))
    # The run directories (models/...), not their eval/ mirrors.
    evals = sorted(k for k in keys if k.endswith("/query-prediction_mAP.json")
                   and "/models/" in k)
    assert len(finals) == 2 and len(evals) == 2
    artifacts = _mlflow_eval_artifacts(mlflow_uri, "s3")
    assert len(artifacts) == 2
    for key in evals:
        body = s3.get_object(Bucket="biohash-sweeps", Key=key)["Body"].read()
        trial_id = key.split("/")[2].rsplit("-", 1)[-1]
        assert artifacts[trial_id]["query-prediction_mAP.json"] == body


def test_environment_sets_storage_and_data_root_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    store, data = tmp_path / "env-store", tmp_path / "env-data"
    monkeypatch.setenv("BIOHASH_STORAGE", str(store))
    monkeypatch.setenv("BIOHASH_DATA_ROOT", str(data))
    assert main(["sweep", "list"]) == 0
    assert f"no sweeps in {store}" in capsys.readouterr().out
    assert main(["sweep", "status", "nope"]) == 2
    assert f"no sweep at '{store / 'nope'}'" in capsys.readouterr().err
    assert main(["sweep", "resume", "nope"]) == 2
    assert f"no sweep at '{store / 'nope'}'" in capsys.readouterr().err
    assert main(["results", "list"]) == 2
    assert str(store) in capsys.readouterr().err
    # CIFAR_10 is never processed in tests: the plan names the data root it looked in.
    cifar = tmp_path / "cifar.yaml"
    cifar.write_text("fixed: {db: CIFAR_10, arch: bio-vgg16}\ngrid: {mode: [fa]}\n")
    assert main(["sweep", "plan", "--space", str(cifar)]) == 1
    assert str(data) in capsys.readouterr().out
    assert main(["sweep", "run", "--space", str(cifar), "--name", "c"]) == 2
    assert str(data) in capsys.readouterr().err
    assert not store.exists() and not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize("kind", ["empty", "file", "under-a-file", "unwritable"])
def test_bad_storage_is_one_line_before_ray_starts(kind, tmp_path, monkeypatch, capsys,
                                                   digits_root):
    import ray

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    storage = {"empty": "", "file": str(blocker), "under-a-file": str(blocker / "sub"),
               # Not writable even for root (tests may run as root, where chmod does not bite).
               "unwritable": "/proc/biohash-sweeps"}[kind]
    ray_before = ray.is_initialized()
    space = _demo_slice(tmp_path)
    assert main(["sweep", "run", "--space", str(space), "--name", "x", "--storage", storage,
                 "--data-root", str(digits_root), "--mlflow-uri", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("biohash: error: ")
    assert {"empty": "bad --storage ''", "file": "it is a file",
            "under-a-file": "not writable", "unwritable": "not writable"}[kind] in err
    assert ray.is_initialized() == ray_before
    assert not (tmp_path / "sweeps").exists()
