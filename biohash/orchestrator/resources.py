"""Per-trial resources and the launch-time check that some node can host a trial.

Tune only warns (after 60 s) about a trial no node can ever run and leaves
it PENDING forever; we refuse to launch instead. On an autoscaling cluster
the nodes that could host it may not exist yet, so the node types declared
in the cluster launcher's bootstrap config count too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from biohash.errors import SweepError

__all__ = ["trial_resources", "check_satisfiable", "node_capacities"]

#: Written by ``ray up`` on the head node; lists the autoscaler's node types.
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml").expanduser()


def trial_resources(cpus: float, gpus: float) -> dict[str, float]:
    return {"cpu": float(cpus), "gpu": float(gpus)}


def node_capacities() -> list[dict[str, float]]:
    """CPU/GPU totals of live nodes, plus autoscaler node types if any."""
    import ray

    caps = [{"CPU": n["Resources"].get("CPU", 0.0), "GPU": n["Resources"].get("GPU", 0.0)}
            for n in ray.nodes() if n.get("Alive")]
    caps.extend(_autoscaler_types())
    return caps


def _autoscaler_types() -> list[dict[str, float]]:
    if not BOOTSTRAP_CONFIG.is_file():
        return []
    import yaml

    config: dict[str, Any] = yaml.safe_load(BOOTSTRAP_CONFIG.read_text()) or {}
    out = []
    for node_type in (config.get("available_node_types") or {}).values():
        res = node_type.get("resources") or {}
        if node_type.get("max_workers", 1):
            out.append({"CPU": float(res.get("CPU", 0)), "GPU": float(res.get("GPU", 0))})
    return out


def check_satisfiable(cpus: float, gpus: float) -> None:
    """Raise ``SweepError`` unless at least one node (or node type) fits one trial."""
    caps = node_capacities()
    if any(c["CPU"] >= cpus and c["GPU"] >= gpus for c in caps):
        return
    best_cpu = max((c["CPU"] for c in caps), default=0)
    best_gpu = max((c["GPU"] for c in caps), default=0)
    raise SweepError(
        f"no node can run a trial needing {cpus:g} CPU and {gpus:g} GPU (largest node: "
        f"{best_cpu:g} CPU, {best_gpu:g} GPU); lower --cpus-per-trial / --gpus-per-trial "
        f"or attach to a cluster with --address")
