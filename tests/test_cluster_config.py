"""cluster.yaml / cluster-gcp.yaml: valid for Ray 2.60's launcher, and shaped as the README says.

Checked offline: Ray's JSON schema (draft-07, shipped in the wheel), then Ray's own
config preparation (``prepare_config`` = defaults merge, docker checks, per-type
worker bounds; then ``validate_config``). The cloud bootstrap (IAM, subnets,
security groups) needs credentials and is not run here.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from biohash.utils import free_port

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
    port = free_port()
    line = line.replace("--port 5000", f"--port {port}")
    (tmp_path / "bucket").mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "BIOHASH_BUCKET": (tmp_path / "bucket").as_uri(),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # New session: the backgrounded server lands in a process group we can kill whole.
    subprocess.run(["bash", "-c", line], env=env, check=True, timeout=60, start_new_session=True)
    pid = int((tmp_path / "mlflow" / "server.pid").read_text())
    try:
        deadline, ok = time.time() + 180, False  # 2 shared cores under load
        while time.time() < deadline and not ok:
            try:
                ok = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
            except requests.RequestException:
                time.sleep(0.5)
        assert ok, (tmp_path / "mlflow" / "server.log").read_text()[-2000:]
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    finally:
        os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_only_ssh_is_opened_to_the_world():
    aws = _load("aws")
    group = aws["provider"]["security_group"]
    assert group["GroupName"] == "biohash-ray"  # the group deploy/aws-once.sh creates
    # The only rule is the tripwire: not a CIDR, so AWS refuses it if Ray ever fills the group.
    (rule,) = group["IpPermissions"]
    assert (rule["FromPort"], rule["ToPort"]) == (22, 22)
    (cidr,) = [r["CidrIp"] for r in rule["IpRanges"]]
    with pytest.raises(ValueError):
        ipaddress.ip_network(cidr)
    assert "aws-once.sh" in cidr and "BIOHASH_SSH_CIDR" in cidr
    for kind in FILES:
        text = FILES[kind].read_text()
        ports = {int(p) for p in re.findall(r"(?:FromPort|ToPort|--port[= ])\s*:?\s*(\d+)", text)}
        assert ports <= {22, 5000, 6379}, ports  # 5000/6379 bind on the head only (no rule)
        assert "0.0.0.0" not in text and "::/0" not in text, kind
        assert "dashboard-host=0.0.0.0" not in text
    script = (ROOT / "deploy" / "aws-once.sh").read_text()
    assert "GroupName" not in script and "--group-name biohash-ray" in script
    assert "CidrIp=$BIOHASH_SSH_CIDR" in script and "check_ssh_cidr" in script


def test_ray_leaves_the_prepared_group_alone_and_trips_on_an_empty_one():
    """Ray's own rule upsert (Ray 2.60, on moto's EC2): a group with rules is not
    touched; an empty group gets Ray's rules plus ours, which AWS refuses."""
    import boto3
    from moto import mock_aws
    from ray.autoscaler._private.aws.config import _upsert_security_group_rules

    conf = _load("aws")
    with mock_aws():
        ec2 = boto3.resource("ec2", region_name="us-west-2")
        vpc = next(iter(ec2.vpcs.all())).id
        prepared = ec2.create_security_group(GroupName="biohash-ray", Description="d", VpcId=vpc)
        prepared.authorize_ingress(IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
             "IpRanges": [{"CidrIp": "203.0.113.7/32"}]},
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": prepared.id}]}])
        prepared.reload()
        before = prepared.ip_permissions
        _upsert_security_group_rules(conf, {"head": prepared})
        prepared.reload()
        assert prepared.ip_permissions == before
        empty = ec2.create_security_group(GroupName="other", Description="d", VpcId=vpc)
        with pytest.raises(Exception, match="aws-once.sh"):
            _upsert_security_group_rules(conf, {"head": empty})


def _worker_types(config: dict) -> dict:
    return {k: v for k, v in config["available_node_types"].items()
            if k != config["head_node_type"]}


def test_workers_have_their_own_role_not_the_heads():
    aws, gcp = _load("aws"), _load("gcp")
    head = aws["available_node_types"][aws["head_node_type"]]["node_config"]
    assert "IamInstanceProfile" not in head  # Ray's ray-autoscaler-v1 (the autoscaler's)
    for name, node in _worker_types(aws).items():
        assert node["node_config"]["IamInstanceProfile"] == {"Name": "biohash-ray-worker"}, name
    head = gcp["available_node_types"][gcp["head_node_type"]]["node_config"]
    assert "serviceAccounts" not in head  # Ray's ray-autoscaler-sa-v1
    for name, node in _worker_types(gcp).items():
        (sa,) = node["node_config"]["serviceAccounts"]
        assert sa["email"].startswith("biohash-ray-worker@"), name
        assert "ray-autoscaler" not in sa["email"]


def _policy(name: str) -> dict:
    return json.loads((ROOT / "deploy" / "aws" / name).read_text())


def test_worker_policy_is_the_bucket_prefixes_and_nothing_else():
    statements = _policy("worker-policy.json")["Statement"]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str)
                                               else s["Action"])}
    assert actions <= {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"}
    assert not any(a.startswith(("ec2:", "iam:")) or "*" in a for a in actions)
    for s in statements:
        assert s["Effect"] == "Allow" and "Condition" not in s
        resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
        for r in resources:
            assert r.startswith("arn:aws:s3:::CHANGE-ME-biohash-bucket"), r
            if r.endswith("*"):  # objects: only under the sweep state or the data
                assert r.split(":::", 1)[1].startswith(("CHANGE-ME-biohash-bucket/sweeps/",
                                                        "CHANGE-ME-biohash-bucket/data/")), r
    writes = {r for s in statements if "s3:PutObject" in s["Action"] for r in [s["Resource"]]}
    assert writes == {"arn:aws:s3:::CHANGE-ME-biohash-bucket/sweeps/*"}  # data/ is read-only


def test_head_may_pass_the_worker_role_only():
    (statement,) = _policy("head-pass-worker-role.json")["Statement"]
    assert statement["Action"] == "iam:PassRole"
    assert statement["Resource"] == "arn:aws:iam::*:role/biohash-ray-worker"
    trust = _policy("worker-trust.json")["Statement"][0]
    assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_gcp_worker_conditions_name_the_bucket_prefixes():
    for name, prefix in (("worker-sweeps-condition.json", "sweeps/"),
                         ("worker-data-condition.json", "data/")):
        cond = json.loads((ROOT / "deploy" / "gcp" / name).read_text())
        expr = cond["expression"]
        assert f'"projects/_/buckets/CHANGE-ME-biohash-bucket/objects/{prefix}"' in expr
    script = (ROOT / "deploy" / "gcp-once.sh").read_text()
    assert "roles/storage.objectAdmin" in script and "worker-sweeps-condition.json" in script
    assert "roles/storage.objectViewer" in script and "worker-data-condition.json" in script
    assert "--source-ranges \"$BIOHASH_SSH_CIDR\"" in script
    assert "projects add-iam-policy-binding" not in script  # no project-wide role


def test_nodes_install_pinned_versions():
    constraints = (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in constraints if line and not line.startswith("#"))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9-]*", n) for n in pins)
    assert not any("+" in v for v in pins.values())  # no local (+cpu/+cu) versions
    assert not any(n.startswith("nvidia-") or n == "triton" for n in pins)
    assert pins["ray"] == "2.60.0"
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=!\[ ;]", dep, 1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} (pyproject) has no pin in deploy/constraints.txt"
    for kind in FILES:
        setup = " ".join(_load(kind)["setup_commands"])
        assert "-c /home/ray/biohash/deploy/constraints.txt" in setup, kind


@pytest.mark.parametrize("kind", sorted(FILES))
def test_image_pinning_is_explained_where_the_tag_is(kind):
    text = FILES[kind].read_text()
    # No digest could be checked offline: the tag stays, the comment says how to pin it.
    assert "docker inspect --format '{{index .RepoDigests 0}}'" in text
    assert "rayproject/ray@sha256" in text


@pytest.mark.parametrize("kind", sorted(FILES))
def test_head_restarts_keep_mlflow_and_sweeps(kind):
    config = _load(kind)
    assert "-v /home/ubuntu/biohash-mlflow:/home/ray/mlflow" in config["docker"]["head_run_options"]
    head = config["available_node_types"][config["head_node_type"]]
    assert "mkdir -p /home/ubuntu/biohash-mlflow" in head["initialization_commands"]
    line = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "biohash cluster mlflow-restore" in line and "|| true" not in line
    assert "--no-restart" in FILES[kind].read_text()


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
