"""``biohash ui``: the MLflow UI on the sweeps' tracking store, bound to localhost."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from biohash.errors import ResultsError

__all__ = ["start_ui", "wait_healthy", "ui_command"]


def ui_command(tracking_uri: str, port: int, *, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line (``mlflow ui`` is the same server).

    For a SQLite store, artifacts go beside the database (``mlartifacts/``),
    where ``SweepLogger`` puts them too, not into the caller's cwd.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        cmd += ["--artifacts-destination", (db.parent / "mlartifacts").resolve().as_uri()]
    return cmd


def start_ui(tracking_uri: str, port: int, *, workers: int = 1, quiet: bool = False) -> subprocess.Popen:
    """Start the server as a subprocess (the caller stops it); does not wait for it."""
    if not 1 <= port <= 65535:
        raise ResultsError(f"bad --port {port}; allowed: 1-65535")
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(ui_command(tracking_uri, port, workers=workers), stdout=out, stderr=out)


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout_s: float = 60.0) -> None:
    """Poll ``GET <url>/health`` until it answers 200; raise if the server died or timed out."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ResultsError(f"the MLflow server exited with status {proc.returncode} "
                               f"before answering at {url}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise ResultsError(f"the MLflow server at {url} did not answer /health within {timeout_s:.0f} s")
