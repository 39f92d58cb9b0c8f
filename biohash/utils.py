"""Small shared helpers: atomic file writes, seeding, devices.

Atomic writes (temp file in the same folder + ``os.replace``) are used for
every file another process may read (manifests, eval JSON, Parquet results)
so an interrupted run never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_write_text", "atomic_write_bytes", "atomic_write_json", "atomic_path",
           "seed_everything", "resolve_device"]


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path beside ``path``; move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shared manifests from other users
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
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
