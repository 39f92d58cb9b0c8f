"""Cluster launcher files (``cluster.yaml``): load, validate, read node types, publish them.

The autoscaler's node types are what decides whether a trial can ever run on
a cluster whose GPU workers start at zero. They live in three places:

- the cluster file the user runs ``ray up`` with (and the copy ``ray up``
  writes on the head, ``~/ray_bootstrap_config.yaml``, which the autoscaler
  reads every update);
- Ray's GCS, under the autoscaler's cluster-config key
  (``ray._private.state.state.get_cluster_config()``; Ray Data reads it to
  size its own autoscaling). Ray's launcher autoscaler (v1 and v2, Ray 2.60)
  does not fill it, so :func:`publish_node_types` does (``biohash cluster
  publish`` on the head), and every driver, wherever it runs, can read it.

A node type here is only what scheduling needs: resources and worker bounds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from biohash.errors import ConfigError

__all__ = ["NodeType", "load_cluster_file", "node_types", "head_type_name",
           "check_head_runs_no_trials", "publish_node_types", "node_types_from_gcs",
           "describe_types"]


@dataclass(frozen=True)
class NodeType:
    """One autoscaler node type: its resources and how many workers of it may exist.

    ``max_workers`` is already capped by the cluster-wide ``max_workers``; -1
    means unbounded (a GCS config may say so).
    """

    name: str
    resources: Mapping[str, float] = field(default_factory=dict)
    min_workers: int = 0
    max_workers: int = 0
    head: bool = False

    @property
    def can_launch(self) -> bool:
        return not self.head and self.max_workers != 0

    def fits(self, demand: Mapping[str, float]) -> bool:
        return all(self.resources.get(k, 0.0) >= v for k, v in demand.items() if v > 0)


def _schema() -> dict[str, Any]:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def load_cluster_file(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` and check it against Ray's own launcher schema (draft-07, in the wheel).

    Raises ``ConfigError`` (one line: the file, the key, what is wrong).
    """
    import jsonschema
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"cluster file {str(path)!r} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{path}:{line} is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a cluster file is a YAML mapping (cluster_name, provider, "
                          f"available_node_types, ...), got {type(config).__name__}")
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft7Validator(_schema()).iter_errors(config))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"{path}: key {key}: {error.message.splitlines()[0][:200]} "
                          f"(Ray's cluster schema, ray/autoscaler/ray-schema.json)")
    return config


def head_type_name(config: Mapping[str, Any], source: str) -> str:
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if head not in types:
        raise ConfigError(f"{source}: key head_node_type: {head!r} is not one of "
                          f"available_node_types ({', '.join(types) or 'none'})")
    return head


def node_types(config: Mapping[str, Any], source: str) -> list[NodeType]:
    """The node types of a launcher config, with Ray's defaults for missing bounds.

    A worker type without ``max_workers`` may grow to the cluster-wide
    ``max_workers`` (Ray's default 2), which also caps each type. Raises
    ``ConfigError`` when a type lacks ``resources``: without them the
    autoscaler (and this check) cannot know what the type can host.
    """
    types = config.get("available_node_types")
    if not types:
        raise ConfigError(f"{source}: key available_node_types is missing or empty; "
                          f"list the node types the autoscaler may start")
    head = head_type_name(config, source)
    total = int(config.get("max_workers", 2))
    out = []
    for name, spec in types.items():
        resources = (spec or {}).get("resources")
        if resources is None:
            raise ConfigError(f"{source}: key available_node_types.{name}.resources is missing; "
                              f"write the type's resources, e.g. resources: {{CPU: 4, GPU: 1}}")
        bound = 0 if name == head else min(int(spec.get("max_workers", total)), total)
        out.append(NodeType(name, {k: float(v) for k, v in resources.items()},
                            int(spec.get("min_workers", 0)), bound, head=name == head))
    return out


def check_head_runs_no_trials(config: Mapping[str, Any], source: str) -> None:
    """The head runs the driver and MLflow, never a trial: its CPU must be 0."""
    head = head_type_name(config, source)
    cpu = ((config["available_node_types"][head] or {}).get("resources") or {}).get("CPU")
    if cpu != 0:
        raise ConfigError(f"{source}: key available_node_types.{head}.resources.CPU is {cpu!r}; "
                          f"the head must run no trials: set it to 0")


def describe_types(types: list[NodeType]) -> str:
    """``gpu_1x (CPU 4, GPU 1) x0..8`` for each type that can launch."""
    parts = []
    for t in types:
        if not t.can_launch:
            continue
        res = ", ".join(f"{k} {v:g}" for k, v in sorted(t.resources.items()))
        bound = "unbounded" if t.max_workers < 0 else f"x{t.min_workers}..{t.max_workers}"
        parts.append(f"{t.name} ({res}) {bound}")
    return "; ".join(parts) or "none that can start"


def _cluster_config_proto(types: list[NodeType]):
    from ray.core.generated import autoscaler_pb2

    proto = autoscaler_pb2.ClusterConfig()
    for t in types:
        if t.head:
            continue  # the head is a live node; the GCS config lists what can be added
        group = proto.node_group_configs.add()
        group.name, group.min_count, group.max_count = t.name, t.min_workers, t.max_workers
        for key, value in t.resources.items():
            group.resources[key] = int(value)  # Ray's schema: resources are integers
    return proto


def publish_node_types(gcs_address: str, types: list[NodeType]) -> None:
    """Record ``types`` as the cluster's autoscaler config in the GCS (Ray's
    ``ReportClusterConfig``), where any driver reads them with
    :func:`node_types_from_gcs` / ``ray._private.state.state.get_cluster_config()``."""
    from ray._raylet import GcsClient

    proto = _cluster_config_proto(types)
    GcsClient(address=gcs_address).report_cluster_config(proto.SerializeToString())


def node_types_from_gcs() -> list[NodeType]:
    """The node types the GCS holds (needs ``ray.init``); empty when none were reported."""
    import ray._private.state

    proto = ray._private.state.state.get_cluster_config()
    if proto is None:
        return []
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.min_count),
                     int(g.max_count)) for g in proto.node_group_configs]
