"""The launch check: a trial is accepted iff a live node or an autoscaler node type fits it.

Node types come from ``--cluster-config``, the running autoscaler's config file,
the GCS cluster config (``biohash cluster publish``) or ``~/ray_bootstrap_config.yaml``;
each source is exercised against a real Ray (the embedded one, or a ``ray start``
cluster driven from a subprocess), never a stand-in.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from biohash.cluster.config import NodeType, load_cluster_file, node_types
from biohash.errors import ConfigError, SweepError

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"


def _write(tmp_path: Path, config: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _cpu_only(tmp_path: Path) -> Path:
    config = yaml.safe_load(CLUSTER.read_text())
    for name, spec in config["available_node_types"].items():
        if name != config["head_node_type"]:
            spec["resources"] = {"CPU": 8}
    return _write(tmp_path, config, "cpu-only.yaml")


@pytest.fixture
def no_home_config(tmp_path, monkeypatch):
    """HOME without ``ray_bootstrap_config.yaml``: only the sources under test count."""
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------ node types of a file

def test_node_types_of_the_shipped_cluster_file():
    types = {t.name: t for t in node_types(load_cluster_file(CLUSTER), str(CLUSTER))}
    assert types["head"].head and not types["head"].can_launch
    assert types["gpu_1x_a10g"].resources == {"CPU": 4.0, "GPU": 1.0}
    assert (types["gpu_1x_a10g"].min_workers, types["gpu_1x_a10g"].max_workers) == (0, 8)
    assert types["gpu_1x_a10g"].fits({"CPU": 2, "GPU": 0.5})
    assert not types["gpu_1x_a10g"].fits({"CPU": 2, "GPU": 2})
    assert types["gpu_4x_a10g"].fits({"CPU": 2, "GPU": 4})


def test_type_bounds_default_to_and_are_capped_by_the_cluster_max():
    config = {"max_workers": 3, "head_node_type": "h",
              "available_node_types": {"h": {"resources": {"CPU": 0}},
                                       "a": {"resources": {"GPU": 1}},
                                       "b": {"resources": {"GPU": 1}, "max_workers": 9},
                                       "off": {"resources": {"GPU": 8}, "max_workers": 0}}}
    types = {t.name: t for t in node_types(config, "x.yaml")}
    assert types["a"].max_workers == 3 and types["b"].max_workers == 3
    assert not types["off"].can_launch  # max_workers 0: can never host anything


def test_a_type_without_resources_is_an_error_naming_file_and_key():
    config = {"head_node_type": "h", "available_node_types": {"h": {"resources": {}},
                                                              "gpu": {"node_config": {}}}}
    with pytest.raises(ConfigError, match=r"x\.yaml: key available_node_types\.gpu\.resources"):
        node_types(config, "x.yaml")


@pytest.mark.parametrize("text, key", [
    ("max_workers: [1\n", "not valid YAML"),
    ("- a\n- b\n", "a YAML mapping"),
    ("cluster_name: x\nprovider: {type: aws}\nmax_workers: -1\n", "key max_workers"),
    ("cluster_name: x\nprovider: {type: aws}\navailable_node_types: {g: {node_config: {}}}\n",
     "key available_node_types.g: 'resources' is a required property"),
])
def test_bad_cluster_files_are_one_line_errors(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_cluster_file(path)
    assert key in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ against a live Ray

def test_explicit_cluster_config_accepts_a_gpu_trial_on_a_cpu_only_ray(ray_local, no_home_config):
    from biohash.orchestrator.resources import check_satisfiable

    check_satisfiable(2, 0.5, cluster_config=CLUSTER)
    check_satisfiable(48, 4, cluster_config=CLUSTER)   # the 4-GPU type
    with pytest.raises(SweepError, match=r"5 GPU.*--cluster-config .*cluster\.yaml"):
        check_satisfiable(1, 5, cluster_config=CLUSTER)  # no type has 5 GPUs


def test_types_that_cannot_host_the_trial_do_not_help(ray_local, no_home_config, tmp_path):
    from biohash.orchestrator.resources import check_satisfiable

    with pytest.raises(SweepError, match="no node can run a trial needing 2 CPU and 0.5 GPU"):
        check_satisfiable(2, 0.5, cluster_config=_cpu_only(tmp_path))
    check_satisfiable(8, 0, cluster_config=_cpu_only(tmp_path))


def test_live_nodes_alone_without_any_autoscaler_source(ray_local, no_home_config):
    from biohash.orchestrator.resources import autoscaler_node_types, check_satisfiable

    assert autoscaler_node_types().types == []  # embedded Ray: no autoscaler config anywhere
    check_satisfiable(1, 0)
    with pytest.raises(SweepError, match="pass its file with --cluster-config"):
        check_satisfiable(1, 0.5)


def test_bootstrap_config_in_home_is_one_source(ray_local, no_home_config):
    from biohash.orchestrator.resources import autoscaler_node_types, check_satisfiable

    (no_home_config / "ray_bootstrap_config.yaml").write_text(CLUSTER.read_text())
    found = autoscaler_node_types()
    assert "bootstrap" in found.source and {t.name for t in found.types} >= {"gpu_1x_a10g"}
    check_satisfiable(2, 0.5)


DRIVER = """
import sys
import ray
from biohash.orchestrator.resources import autoscaler_node_types, check_satisfiable
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
found = autoscaler_node_types()
print("SOURCE", found.source)
check_satisfiable(2, 0.5)
try:
    check_satisfiable(2, 8)
except Exception as exc:
    print("REFUSED", exc)
"""


@pytest.mark.slow
def test_gcs_published_types_reach_a_driver_anywhere(tmp_path):
    """``biohash cluster publish`` on the head; a driver with nothing but the address checks."""
    sys.path.insert(0, str(Path(__file__).parent))
    from ray_cluster import local_cluster

    env = {**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    with local_cluster(workers=0, cpus=0) as cluster:
        refused = subprocess.run([sys.executable, "-c", DRIVER, cluster.address], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "no node can run a trial needing 2 CPU" in refused.stderr
        pub = subprocess.run([sys.executable, "-m", "biohash.cli", "cluster", "publish", str(CLUSTER),
                              "--address", cluster.address], env=env, capture_output=True,
                             text=True, timeout=120)
        assert pub.returncode == 0, pub.stderr[-2000:]
        assert "gpu_1x_a10g (CPU 4, GPU 1) x0..8" in pub.stdout
        out = subprocess.run([sys.executable, "-c", DRIVER, cluster.address], env=env,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SOURCE the cluster config in Ray's GCS" in out.stdout
    assert "REFUSED no node can run a trial needing 2 CPU and 8 GPU" in out.stdout


def test_publish_round_trip_keeps_integer_resources_and_bounds():
    from biohash.cluster.config import _cluster_config_proto

    types = node_types(load_cluster_file(CLUSTER), "cluster.yaml")
    proto = _cluster_config_proto(types)
    groups = {g.name: g for g in proto.node_group_configs}
    assert set(groups) == {"gpu_1x_a10g", "gpu_4x_a10g"}  # the head is a live node, not a type
    assert dict(groups["gpu_4x_a10g"].resources) == {"CPU": 48, "GPU": 4}
    assert groups["gpu_4x_a10g"].max_count == 2
    assert NodeType("x", {"GPU": 1.0}, 0, 1).fits({"CPU": 0, "GPU": 1})
