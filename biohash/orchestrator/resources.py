"""Per-trial resources and the launch-time check that some node can host a trial.

Tune only warns (after 60 s) about a trial no node can ever run and leaves
it PENDING forever; we refuse to launch instead. On an autoscaling cluster
the nodes that could host it may not exist yet (GPU workers start at zero),
so the autoscaler's node types count as much as the live nodes. The rule:
a trial is accepted iff a live node, or a node type the autoscaler may
start (``max_workers`` != 0), has at least its CPUs and GPUs.

The node types are looked up where the driver can see them, first hit wins:

1. ``cluster_config``: an explicit cluster file (``--cluster-config PATH``),
   the user's override;
2. the running autoscaler's own config file: the monitor process of this
   cluster, found by its pid in the autoscaler status the monitor keeps in
   the GCS (or by its GCS port), runs with ``--autoscaling-config=PATH``; a
   driver on the head machine (``ray exec``, ``ray job submit``, a
   rehearsal) reads that file;
3. the GCS: node types reported as the cluster config (Ray's
   ``ReportClusterConfig``, written by ``biohash cluster publish`` on the
   head) - the source for a laptop attached with ``--address``;
4. ``~/ray_bootstrap_config.yaml``, which ``ray up`` writes on the head.

Without any of them only live nodes count, and the error says how to pass
``--cluster-config``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from biohash.cluster.config import NodeType, describe_types, load_cluster_file, node_types
from biohash.errors import SweepError

__all__ = ["trial_resources", "check_satisfiable", "node_capacities", "autoscaler_node_types",
           "AutoscalerTypes", "BOOTSTRAP_CONFIG"]

#: Written by ``ray up`` on the head node; lists the autoscaler's node types.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
#: GCS key where Ray's v1 monitor keeps its status (with its pid).
_STATUS_KEY = b"__autoscaling_status"
_MONITOR_SCRIPTS = ("ray/autoscaler/_private/monitor.py", "ray/autoscaler/v2/monitor.py")


def trial_resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"cpu": float(cpus), "gpu": float(gpus)}


@dataclass(frozen=True)
class AutoscalerTypes:
    """Node types the autoscaler may start, and where they were read (for messages)."""

    types: list[NodeType] = field(default_factory=list)
    source: str = ""


def _from_file(path: str | Path, label: str) -> AutoscalerTypes:
    config = load_cluster_file(path)
    return AutoscalerTypes(node_types(config, str(path)), f"{label} {path}")


def _monitor_argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _monitor_config_path(argv: list[str], gcs_port: str, pid: int) -> Path | None:
    """``--autoscaling-config`` of a monitor process serving the GCS on ``gcs_port``."""
    if not any(a.endswith(_MONITOR_SCRIPTS) for a in argv):
        return None
    opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    if opts.get("gcs-address", "").rpartition(":")[2] != gcs_port:
        return None
    if not opts.get("autoscaling-config"):
        return None
    path = Path(os.path.expanduser(opts["autoscaling-config"]))
    if not path.is_absolute():
        path = Path(f"/proc/{pid}/cwd") / path
    return path if path.is_file() else None


def _monitor_pids() -> list[int]:
    """The monitor pid recorded in the GCS (Ray's v1 monitor), else every local pid."""
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        status = json.loads(_internal_kv_get(_STATUS_KEY) or b"{}")
    except (ValueError, RuntimeError):
        status = {}
    if status.get("monitor_pid"):
        return [int(status["monitor_pid"])]
    return [int(p) for p in os.listdir("/proc") if p.isdigit()] if os.path.isdir("/proc") else []


def _running_autoscaler_config() -> Path | None:
    import ray

    port = ray.get_runtime_context().gcs_address.rpartition(":")[2]
    for pid in _monitor_pids():
        path = _monitor_config_path(_monitor_argv(pid), port, pid)
        if path is not None:
            return path
    return None


def autoscaler_node_types(cluster_config: str | Path | None = None) -> AutoscalerTypes:
    """The autoscaler's node types from the first source that has them (module docstring).

    Needs ``ray.init`` except with ``cluster_config``. A malformed file is a
    ``ConfigError`` naming the file and key.
    """
    from biohash.cluster.config import node_types_from_gcs

    if cluster_config is not None:
        return _from_file(cluster_config, "--cluster-config")
    path = _running_autoscaler_config()
    if path is not None:
        return _from_file(path, "the running autoscaler's config")
    types = node_types_from_gcs()
    if types:
        return AutoscalerTypes(types, "the cluster config in Ray's GCS")
    bootstrap = Path(BOOTSTRAP_CONFIG).expanduser()
    if bootstrap.is_file():
        return _from_file(bootstrap, "ray up's bootstrap config")
    return AutoscalerTypes()


def _live_nodes() -> list[dict[str, float]]:
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def node_capacities(cluster_config: str | Path | None = None) -> list[dict[str, float]]:
    """Resources of every live node and of every node type the autoscaler may start."""
    found = autoscaler_node_types(cluster_config)
    return _live_nodes() + [dict(t.resources) for t in found.types if t.can_launch]


def _fits(capacity: Mapping[str, float], demand: Mapping[str, float]) -> bool:
    return all(capacity.get(k, 0.0) >= v for k, v in demand.items() if v > 0)


def check_satisfiable(cpus: float, gpus: float, *,
                      cluster_config: str | Path | None = None) -> None:
    """Raise ``SweepError`` unless a live node or an autoscaler node type fits one trial.

    ``cluster_config``: a cluster file whose node types replace the ones
    found on the cluster (``--cluster-config``). Needs ``ray.init``.
    """
    demand = {"CPU": float(cpus), "GPU": float(gpus)}
    found = autoscaler_node_types(cluster_config)
    live = _live_nodes()
    if any(_fits(node, demand) for node in live) or \
            any(t.can_launch and t.fits(demand) for t in found.types):
        return
    best = ", ".join(f"{n.get('CPU', 0):g} CPU/{n.get('GPU', 0):g} GPU" for n in live) or "none"
    if found.source:
        scaling = f"autoscaler node types from {found.source}: {describe_types(found.types)}"
    else:
        scaling = ("no autoscaler node types found (if the cluster autoscales, pass its file "
                   "with --cluster-config cluster.yaml)")
    raise SweepError(
        f"no node can run a trial needing {cpus:g} CPU and {gpus:g} GPU (live nodes: {best}; "
        f"{scaling}); lower --cpus-per-trial / --gpus-per-trial or use a cluster that has "
        f"such nodes")
