"""Shared fixtures: a processed DIGITS root, a tiny trial config, a local Ray.

Every test runs on CPU with real components; heavy fixtures are
session-scoped so the suite stays well under CI's budget on 2 cores.
"""
from __future__ import annotations

import os

# Before anything imports Ray: no token auth prompt/file in tests, and no
# usage-stats network calls from a machine without internet.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")

import pytest  # noqa: E402


def pytest_configure(config) -> None:
    """Once, before xdist's workers start (or a plain run's tests): compile the
    metrics' kernels, or load them from Numba's cache, so that no worker or
    trial process compiles them in parallel with the others."""
    if not hasattr(config, "workerinput"):
        from biohash.metrics.retrieval import warm_up

        warm_up()


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """A data root with DIGITS and DIGITS_ML processed (real sklearn data)."""
    from biohash.data import open_store

    root = tmp_path_factory.mktemp("data")
    open_store("DIGITS", root)
    open_store("DIGITS_ML", root)
    return root


@pytest.fixture
def tiny_cfg():
    """A fast DIGITS trial: small CNN, 2 epochs."""
    from biohash.config import TrialConfig

    return TrialConfig(exp="t", db="DIGITS", loss="DPSH", nbits=16, arch="bio-cnn-small",
                       mode="fa", bs=64, ep=2, pt=5, lr=1e-3, wd=0.0, weights="none",
                       val_size=200, val_repeats=2)


@pytest.fixture(scope="session")
def ray_local():
    """One embedded 2-CPU Ray for the tests that need it."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()
