"""Ray's fake multi-node provider, with a cloud's view of a reclaimed instance.

The rehearsal's autoscaler loads this class (``provider.type: external``,
``provider.module``: ``biohash.cluster.fake.FAKE_PROVIDER``) inside Ray's
monitor process. It is Ray's own
``FakeMultiNodeProvider`` with one difference, the one that makes a spot
loss behave as on the cloud: a worker whose raylet has died leaves
``non_terminated_nodes`` at once (its remaining processes are killed through
the provider's own ``terminate_node``), as a reclaimed spot instance leaves
the cloud's instance list.

Why: the stock fake provider keeps a dead node listed. Its workers are
tagged ``uninitialized`` (node updaters are off), so the autoscaler's
liveness check skips them, and while placement groups wait the autoscaler
keeps the dead node "needed" for them instead of idling it out: a loss was
seen to hold a ``max_workers`` slot for ~110 s, during which no replacement
could start. With this class the replacement starts within one autoscaler
update (~1 s) after the GCS has declared the node dead.
"""
from __future__ import annotations

import logging
from typing import Any

from ray._private import ray_constants
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

__all__ = ["ReclaimableFakeProvider"]

logger = logging.getLogger(__name__)


def _raylet_died(node: Any) -> bool:
    """Whether a fake worker's raylet process (started by this provider) has exited."""
    return any(kind == ray_constants.PROCESS_TYPE_RAYLET for kind, _ in node.dead_processes())


class ReclaimableFakeProvider(FakeMultiNodeProvider):
    """``FakeMultiNodeProvider`` whose instance list drops workers whose raylet died."""

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        with self.lock:
            # the head's entry has no "node": its processes are `ray start`'s, not ours
            lost = [node_id for node_id, entry in self._nodes.items()
                    if "node" in entry and _raylet_died(entry["node"])]
            for node_id in lost:
                logger.info("ReclaimableFakeProvider: %s lost its raylet: terminating it, "
                            "as a cloud drops a reclaimed instance", node_id)
                self.terminate_node(node_id)
        return super().non_terminated_nodes(tag_filters)
