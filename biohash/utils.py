"""Small shared helpers: atomic file writes, seeding, devices.

The ``atomic_write_*`` helpers write local files through
``biohash.storage.atomic_path`` (temp file, fsync, rename, fsync of the
folder), so an interrupted run never leaves a half-written file that looks
complete.
"""
from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_write_json", "free_port",
           "seed_everything", "resolve_device"]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write a local file atomically and durably (``biohash.storage.atomic_path``)."""
    from biohash.storage import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a server started next:
    MLflow, a rehearsal's GCS, a test's S3). Loopback only, like every server biohash starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported) for a reproducible trial."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> "Any":
    """The torch device a trial runs on.

    ``auto``: ``cuda`` if CUDA is *usable* here (torch sees a device and can
    allocate on it), else ``cpu`` - h2q's rule, made robust. Ray sets
    ``CUDA_VISIBLE_DEVICES`` for a trial it placed on a GPU of a node that
    *advertises* GPUs; where CUDA cannot be used there (no driver, a broken
    one, a fake GPU node of ``biohash cluster rehearse``) the trial runs on
    the CPU with one warning per process instead of crashing, and reports
    ``cpu`` as the device it used, never a GPU. Any other value is taken as
    given (``cpu``, ``cuda:1``, ``mps``); an explicit ``cuda`` that is not
    usable is a ``ConfigError``, raised before any work.
    """
    import torch

    if device == "auto":
        problem = _cuda_problem()
        if problem is None:
            return torch.device("cuda")
        if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1"):
            _warn_cpu_fallback(problem)
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and _cuda_problem() is not None:
        from biohash.errors import ConfigError

        raise ConfigError(f"bad --device {device!r}: CUDA is not usable here "
                          f"({_cuda_problem()}); allowed: auto, cpu")
    return resolved


_warned_cpu_fallback = False


def _warn_cpu_fallback(problem: str) -> None:
    global _warned_cpu_fallback
    if _warned_cpu_fallback:
        return
    _warned_cpu_fallback = True
    import warnings

    warnings.warn(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} assigns a GPU, "
                  f"but CUDA is not usable here ({problem}); running on the CPU",
                  RuntimeWarning, stacklevel=3)


@functools.lru_cache(maxsize=1)
def _cuda_problem() -> str | None:
    """Why CUDA cannot be used in this process, or None. Cached: it cannot change."""
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    try:
        torch.zeros(1, device="cuda")
    except Exception as exc:  # noqa: BLE001 - any CUDA init error means "not usable"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    return None
