"""cluster.yaml / cluster-gcp.yaml: valid for Ray 2.60's launcher, and shaped as the README says.

Checked offline: Ray's JSON schema (draft-07, shipped in the wheel), then Ray's own
config preparation (``prepare_config`` = defaults merge, docker checks, per-type
worker bounds; then ``validate_config``). The cloud bootstrap (IAM, subnets,
security groups) needs credentials and is not run here.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = {"aws": ROOT / "cluster.yaml", "gcp": ROOT / "cluster-gcp.yaml"}
IMAGE = "rayproject/ray:2.60.0-py311-gpu"
#: Things that look like credentials: AWS key ids / secrets, private keys, tokens.
SECRET_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"-----BEGIN",
                   r"RAY_AUTH_TOKEN=", r"\bpassword\b", r"[A-Za-z0-9/+]{40}",
                   r"ssh_private_key", r"gcp_credentials"]


def _load(kind: str) -> dict:
    return yaml.safe_load(FILES[kind].read_text())


@pytest.fixture(params=sorted(FILES))
def config(request) -> dict:
    return _load(request.param)


def test_valid_against_rays_schema(config):
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(config, schema, cls=jsonschema.Draft7Validator)


def test_rays_own_preparation_and_validation_accept_it(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert types[prepared["head_node_type"]]["max_workers"] == 0
    assert sum(t.get("min_workers", 0) for t in types.values()) <= prepared["max_workers"]
    assert prepared["docker"]["image"] == IMAGE


def test_head_runs_no_trials_and_gpu_workers_scale_from_zero(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert workers
    for name, node in workers.items():
        assert node["min_workers"] == 0 and node["max_workers"] >= 1, name
        res = node["resources"]
        # Integers (Ray's schema), and GPUs declared so `sweep run` can check fit upfront.
        assert all(isinstance(v, int) for v in res.values()) and res["GPU"] >= 1, name
    assert config["idle_timeout_minutes"] > 0


def test_workers_are_spot(config):
    for name, node in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        nc = node["node_config"]
        spot = nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or \
            nc.get("scheduling", {}).get("provisioningModel") == "SPOT"
        assert spot, name


def test_image_auth_and_shared_storage_env(config):
    docker = config["docker"]
    assert docker["image"] == IMAGE
    options = " ".join(docker["run_options"])
    assert "--env RAY_AUTH_MODE=token" in options
    buckets = re.findall(r"BIOHASH_BUCKET=(\S+)", options)
    assert len(buckets) == 1 and buckets[0].startswith(("s3://", "gs://"))
    text = yaml.safe_dump(config)
    assert text.count(buckets[0]) == 1, "the bucket must be written once"
    setup = " ".join(config["setup_commands"])
    assert "BIOHASH_STORAGE=$BIOHASH_BUCKET/" in setup and "BIOHASH_DATA_ROOT=$BIOHASH_BUCKET/" in setup
    # The token file travels from the user's machine; the value never sits in the file.
    assert config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"


def test_workers_get_the_drivers_code(config):
    assert config["file_mounts"]["/home/ray/biohash"] == "."
    assert ".gitignore" in config["rsync_filter"]
    setup = " ".join(config["setup_commands"])
    assert 'pip install' in setup and '"/home/ray/biohash"' in setup
    assert "ray[tune]==2.60.0" in setup  # never let pip move Ray off the image's version


def test_mlflow_server_runs_on_the_head_with_artifacts_in_the_bucket(config):
    head = " ".join(config["head_start_ray_commands"])
    server = re.search(r"nohup mlflow server (.*?) & echo", head)
    assert server, head
    args = server.group(1)
    assert re.search(r"--backend-store-uri sqlite:///\S+", args)
    assert "--host 127.0.0.1" in args and "--port 5000" in args
    assert "--artifacts-destination $BIOHASH_BUCKET/" in args
    assert "> ~/mlflow/server.log 2>&1" in args
    assert "--dashboard-host=127.0.0.1" in head
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in " ".join(config["docker"]["run_options"])


@pytest.mark.slow
def test_the_head_mlflow_command_starts_a_server_that_answers(tmp_path):
    """Run the head's MLflow start line itself (bash, a file:// bucket) and query it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests

    line = next(c for c in _load("aws")["head_start_ray_commands"] if "mlflow server" in c)
    port = _free_port()
    line = line.replace("--port 5000", f"--port {port}")
    (tmp_path / "bucket").mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "BIOHASH_BUCKET": (tmp_path / "bucket").as_uri(),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # New session: the backgrounded server lands in a process group we can kill whole.
    subprocess.run(["bash", "-c", line], env=env, check=True, timeout=60, start_new_session=True)
    pid = int((tmp_path / "mlflow" / "server.pid").read_text())
    try:
        deadline, ok = time.time() + 90, False
        while time.time() < deadline and not ok:
            try:
                ok = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
            except requests.RequestException:
                time.sleep(0.5)
        assert ok, (tmp_path / "mlflow" / "server.log").read_text()[-2000:]
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    finally:
        os.killpg(os.getpgid(pid), signal.SIGKILL)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_only_ssh_is_opened_to_the_world():
    aws = _load("aws")
    group = aws["provider"]["security_group"]
    # Ray adds SSH (22) and intra-cluster rules itself; extra rules would open more ports.
    assert group["IpPermissions"] == []
    for kind in FILES:
        text = FILES[kind].read_text()
        ports = {int(p) for p in re.findall(r"(?:FromPort|ToPort|--port[= ])\s*:?\s*(\d+)", text)}
        assert ports <= {5000, 6379}, ports  # 5000/6379 bind on the head only (no rule)
        assert "0.0.0.0" not in text, kind
        assert "dashboard-host=0.0.0.0" not in text


@pytest.mark.parametrize("kind", sorted(FILES))
def test_no_secrets_in_the_file(kind):
    text = FILES[kind].read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text, re.IGNORECASE), pattern


# --- benchmarks/gpu_check.sh: its CPU mode runs the whole pipeline with tiny sizes ----

@pytest.mark.slow
def test_gpu_check_script_cpu_mode(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    trials = summary["trials"]
    assert [t["sweep"] for t in trials] == ["pair", "pair", "alone"]
    assert all(t["images_per_s"] > 0 and t["epochs"] == 1 for t in trials)
    assert summary["shared_per_trial_over_alone"] > 0
    assert "ratio per trial, shared/alone" in proc.stdout


def test_gpu_check_script_rejects_unknown_flags(tmp_path):
    import subprocess

    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)})
    assert proc.returncode == 2 and "unknown argument '--nope'" in proc.stderr
