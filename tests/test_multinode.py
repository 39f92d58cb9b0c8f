"""Code and data on every node, and a lost worker node, on a real 2-node Ray cluster.

The cluster (tests/ray_cluster.py) is two ``ray start`` nodes on this machine; the
processed DIGITS store is pushed to a real S3 API (moto) and each node materialises
it into its own cache, as GPU workers do from the bucket. The sweep is the real CLI
attached with ``--address``; the worker node is SIGKILLed while one of its trials is
mid-run, and the sweep must still finish every trial exactly once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from biohash.data import open_store, store_dir
from biohash.data.push import push
from biohash.data.remote import materialize
from biohash.data.store import MANIFEST
from biohash.errors import DataError
from ray_cluster import local_cluster
from s3_server import start_moto

BUCKET = "biohash-multinode"
MODES = ("bp", "fa", "usf", "frsf")


# --- push: the command that puts a processed dataset where every node finds it -------

def test_push_to_a_folder_then_materialize_reads_it_back(digits_root, tmp_path):
    where = push("DIGITS", str(digits_root), str(tmp_path / "shared"))
    assert where == str(tmp_path / "shared" / "processed" / "DIGITS")
    local = materialize("DIGITS", (tmp_path / "shared").as_uri(), tmp_path / "cache")
    store = open_store("DIGITS", local)
    assert store.verify() == [] and store.sizes == open_store("DIGITS", digits_root).sizes


def test_push_to_s3_with_the_manifest_written_last(digits_root, tmp_path):
    with start_moto() as s3:
        s3.client().create_bucket(Bucket=BUCKET)
        fs = s3.filesystem()
        assert push("DIGITS", str(digits_root), f"{BUCKET}/data", filesystem=fs) == \
            f"{BUCKET}/data/processed/DIGITS"
        objects = s3.client().list_objects_v2(Bucket=BUCKET)["Contents"]
        # Last-modified order: the manifest must not be older than any array.
        files = {o["Key"].rsplit("/", 1)[-1]: o["LastModified"] for o in objects
                 if o["Key"].endswith((".npy", ".json"))}
        assert set(files) == set(os.listdir(store_dir(digits_root, "DIGITS"))) - {".lock"}
        assert files[MANIFEST] >= max(files.values())
        uri = f"s3://{BUCKET}/data?endpoint_override=127.0.0.1:{s3.port}&scheme=http" \
              f"&region=us-east-1"
        assert open_store("DIGITS", materialize("DIGITS", uri, tmp_path / "c")).verify() == []


def test_push_refuses_bad_input_before_writing(digits_root, tmp_path):
    with pytest.raises(DataError, match="CIFAR_10 is not processed.*biohash data download"):
        push("CIFAR_10", str(tmp_path / "empty"), str(tmp_path / "dest"))
    with pytest.raises(DataError, match="onto itself"):
        push("DIGITS", str(digits_root), str(digits_root))
    with pytest.raises(DataError, match="bad data root 'nosuch://x'"):
        push("DIGITS", str(digits_root), "nosuch://x")
    damaged = tmp_path / "damaged"
    open_store("DIGITS", damaged)
    with open(store_dir(damaged, "DIGITS") / "train.images.npy", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(DataError, match="train.images.npy is missing or has the wrong size"):
        push("DIGITS", str(damaged), str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_a_failed_re_push_leaves_no_manifest_so_nodes_refuse_the_copy(digits_root, tmp_path):
    dest = tmp_path / "dest"
    push("DIGITS", str(digits_root), str(dest))
    # A folder where a file must go makes the upload of that one file fail.
    target = dest / "processed" / "DIGITS" / "val.ids.npy"
    target.unlink()
    target.mkdir()
    with pytest.raises(DataError, match="cannot upload DIGITS"):
        push("DIGITS", str(digits_root), str(dest))
    assert not (dest / "processed" / "DIGITS" / MANIFEST).exists()
    with pytest.raises(DataError, match="not processed"):
        materialize("DIGITS", dest.as_uri(), tmp_path / "cache")


# --- the sweep on two nodes, one of which dies ----------------------------------------

def _space(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-multinode.yaml"
    path.write_text(textwrap.dedent(f"""\
        description: tiny DIGITS grid on two nodes
        fixed: {{exp: mn, db: DIGITS, arch: bio-cnn-small, loss: DPSH, nbits: 16, bs: 64,
                ep: 6, pt: 20, lr: 1.0e-3, wd: 0.0, weights: none, val_size: 200}}
        grid: {{mode: [{", ".join(MODES)}]}}
        """))
    return path


def _results(sweep_dir: Path) -> dict[str, list[dict]]:
    """Tune's per-trial result.json rows (driver-written, so readable while running)."""
    out = {}
    # Trial folders sit in the sweep folder or one level below (Tune's experiment folder).
    for trial_dir in [*sweep_dir.glob("DIGITS-*"), *sweep_dir.glob("*/DIGITS-*")]:
        rows = []
        path = trial_dir / "result.json"
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line being written
        out[trial_dir.name.rsplit("-", 1)[-1]] = rows
    return out


def _parquet_rows(sweep_dir: Path) -> dict[str, dict]:
    files = sorted(f for f in sweep_dir.glob("**/results/trials/*.parquet")
                   if not f.name.startswith(("_", ".")))
    rows = [pq.read_table(f).to_pylist()[0] for f in files]
    return {r["trial_id"]: r for r in rows}


@pytest.mark.slow
def test_sweep_spans_both_nodes_and_survives_losing_the_worker(digits_root, tmp_path):
    storage, sweep = tmp_path / "sweeps", "multinode"
    caches = [tmp_path / "cache-head", tmp_path / "cache-worker"]
    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
             "AWS_EC2_METADATA_DISABLED": "true"}
    with start_moto() as s3:
        s3.client().create_bucket(Bucket=BUCKET)
        push("DIGITS", str(digits_root), f"{BUCKET}/data", filesystem=s3.filesystem())
        data_root = f"s3://{BUCKET}/data?endpoint_override=127.0.0.1:{s3.port}&scheme=http" \
                    f"&region=us-east-1"
        with local_cluster(1, env={**creds, "BIOHASH_DATA_CACHE": str(caches[0])},
                           node_env=[{"BIOHASH_DATA_CACHE": str(caches[1])}]) as cluster:
            worker = cluster.nodes[1]
            mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
            log = tmp_path / "sweep.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "biohash.cli", "sweep", "run", "--space",
                 str(_space(tmp_path)), "--name", sweep, "--storage", str(storage),
                 "--address", cluster.address, "--data-root", data_root,
                 "--mlflow-uri", mlflow_uri, "--cpus-per-trial", "1", "--max-failures", "3",
                 "--checkpoint-interval", "0",
                 "--tune-verbose", "0"],
                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                env={**cluster.env, "PYTHONUNBUFFERED": "1"})
            try:
                victim = _kill_worker_mid_trial(cluster, worker, storage / sweep, proc, log)
                assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
    rows, results = _parquet_rows(storage / sweep), _results(storage / sweep)
    assert len(rows) == len(MODES) and all(r["status"] == "finished" for r in rows.values())
    assert {r["mode"] for r in rows.values()} == set(MODES)
    ips = {tid: [r["node_ip"] for r in rs] for tid, rs in results.items()}
    assert worker.ip in {ip for seq in ips.values() for ip in seq}, ips
    assert cluster.head.ip in {ip for seq in ips.values() for ip in seq}, ips
    # The killed trial went on on the head, from its checkpoint (not from epoch 1).
    after = [r for r in results[victim] if r["node_ip"] != worker.ip and "epoch" in r]
    assert after and after[0]["epoch"] >= 2, results[victim]
    # Each node copied the data from the bucket into its own cache.
    for cache in caches:
        assert list(cache.glob(f"*/processed/DIGITS/{MANIFEST}")), cache
    _check_mlflow(mlflow_uri, set(rows))


def _kill_worker_mid_trial(cluster, worker, sweep_dir: Path, proc, log: Path) -> str:
    """Wait for a trial on ``worker`` to report an epoch (so it has a checkpoint), kill the node."""
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, log.read_text()[-4000:]
        done = set(_parquet_rows(sweep_dir))
        for tid, rows in _results(sweep_dir).items():
            if tid not in done and rows and rows[-1].get("node_ip") == worker.ip \
                    and 1 <= rows[-1].get("epoch", 0) <= 3 and not rows[-1].get("done"):
                # epoch <= 3 of 6: the trial is surely still running when its node dies
                cluster.kill_node(worker)
                assert not worker.alive
                return tid
        time.sleep(0.2)
    raise AssertionError(f"no trial ran on the worker node: {_results(sweep_dir)}")


def _check_mlflow(uri: str, trial_ids: set[str]) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True)
    children = runs[runs["tags.biohash.trial_id"].notna()]
    assert sorted(children["tags.biohash.trial_id"]) == sorted(trial_ids), children
    assert (children["status"] == "FINISHED").all()
