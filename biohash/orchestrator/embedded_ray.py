"""The embedded Ray of ``sweep run`` without ``--address`` (and ``biohash demo``):
reachable from this machine only, and only with a token nobody else has.

Two independent locks, because either alone can fail open:

**Loopback only.** Ray's C++ servers (GCS, raylet, every worker's core-worker
server) listen on 127.0.0.1 exactly when the node IP is ``127.0.0.1``, and on
every interface otherwise; its Python agents bind the node IP. But on Linux
``ray.init(_node_ip_address="127.0.0.1")`` does not give that node IP:
``services.resolve_ip_for_localhost`` replaces a loopback address by the
machine's routable one, unless ``ray_constants.ENABLE_RAY_CLUSTER`` is false
(Ray's own default on macOS and Windows, where a local Ray is single-node;
the env var ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is read once, when Ray is
imported, which biohash has done long before). So :func:`start_embedded_ray`
turns that flag off for the duration of ``ray.init`` only (child processes
get the node IP on their command lines, they never resolve it again), and
then checks the node IP it got: anything but 127.0.0.1 stops Ray and raises.

**Token auth on, with a throw-away token.** Ray 2.60 checks a bearer token on
every gRPC and HTTP request when ``RAY_AUTH_MODE=token``. The token is 32
random bytes made for this run, handed to Ray as ``RAY_AUTH_TOKEN`` in this
process's environment, which the GCS, raylet and workers inherit; it is never
written to disk (``~/.ray/auth_token`` is not read or written) and is
gone when the process exits. This overrides ``RAY_AUTH_MODE=disabled``
(set by ``make test``/``make demo`` only to keep Ray from writing a token
file): a cluster that only this process can reach needs no user-visible
token, so there is nothing to opt out of. The variables stay set until the
process exits: Ray's C++ token loader rereads them while gRPC threads drain
after ``ray.shutdown`` and aborts when they are gone
(``ray._private.authentication_test_utils.reset_auth_token_state``).

A cluster given with ``--address`` is the user's: its binding and auth are
whatever it was started with (``cluster.yaml``: token auth on every node).
"""
from __future__ import annotations

import contextlib
import os
import secrets
from typing import Iterator

from biohash.errors import SweepError

__all__ = ["LOOPBACK", "start_embedded_ray", "attach_ray", "embedded_token_env"]

LOOPBACK = "127.0.0.1"


def embedded_token_env() -> dict[str, str]:
    """The auth variables for a new embedded Ray: token mode, a fresh 256-bit token."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _use_token_auth() -> None:
    os.environ.update(embedded_token_env())
    # A token path set by the user would name another cluster's token.
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    from ray._raylet import AuthenticationTokenLoader, Config

    # This process may have read RayConfig already (an earlier ray.init with
    # auth disabled): reread it, then drop the cached token (Ray's own order).
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    import ray._private.ray_constants as ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def start_embedded_ray(num_cpus: int | None) -> None:
    """Start a new single-node Ray bound to 127.0.0.1 with a throw-away auth token.

    ``address="local"``: never attach by accident to a stale cluster recorded
    in ``/tmp/ray/ray_current_cluster``. Raises ``SweepError`` (after stopping
    Ray) if Ray came up on another address than 127.0.0.1.
    """
    import ray

    _use_token_auth()
    with _loopback_node_ip():
        context = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                           log_to_driver=False, configure_logging=False,
                           _node_ip_address=LOOPBACK)
    node_ip = context.address_info.get("node_ip_address")
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise SweepError(f"the embedded Ray (Ray {ray.__version__}) came up on node IP "
                         f"{node_ip!r}, not {LOOPBACK}, so it would listen on every interface; "
                         f"stopped it (start a cluster yourself and pass --address)")


def attach_ray(address: str) -> None:
    """Attach to the cluster at ``address`` (``auto``, ``host:port``, ``ray://``)."""
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
