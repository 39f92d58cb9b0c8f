"""Clusters: launcher files, the autoscaler's node types, and a one-machine rehearsal.

- :mod:`biohash.cluster.config`: load and validate a ``cluster.yaml`` (Ray's
  schema), its node types, publish them to the GCS for drivers anywhere.
- :mod:`biohash.cluster.fake`: the fake multi-node autoscaling config derived
  from a cluster file, and the processes of such a cluster on this machine.
- :mod:`biohash.cluster.rehearse`: ``biohash cluster rehearse``: the README's
  launch command against that cluster, with spot losses, as a report.
"""
from __future__ import annotations

from biohash.cluster.config import NodeType, load_cluster_file, node_types

__all__ = ["NodeType", "load_cluster_file", "node_types"]
