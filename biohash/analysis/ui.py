"""``biohash ui``: the MLflow UI on the sweeps' tracking store, bound to localhost.

``mlflow server`` is a tree of processes (the CLI, then gunicorn or uvicorn and
their workers); signalling only the CLI's pid leaves the workers serving. So the
server starts in its own session (``start_new_session=True``: its own process
group, out of reach of the terminal's Ctrl-C, which :func:`serve_ui` forwards),
and :class:`UiServer` signals that whole group: ``terminate()`` SIGTERM,
``kill()`` SIGKILL, ``stop()`` SIGTERM then SIGKILL after a grace period.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from biohash.defaults import mlflow_artifact_root
from biohash.errors import ResultsError

__all__ = ["start_ui", "serve_ui", "wait_healthy", "ui_command", "UiServer", "STOP_GRACE_S"]

#: Seconds the server group gets to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0


class UiServer(subprocess.Popen):
    """The ``mlflow server`` process, leader of its own process group; every signal
    method reaches the whole group (Popen's own would reach the leader only)."""

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None and not self._group_alive():
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM the group; after ``grace_s`` SIGKILL what is left; returns the exit status."""
        self.terminate()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self.poll() is not None and not self._group_alive():
                return self.returncode
            time.sleep(0.1)
        self.kill()
        return self.wait()


def ui_command(tracking_uri: str, port: int, *, workers: int = 1) -> list[str]:
    """The ``mlflow server`` command line (``mlflow ui`` is the same server).

    For a SQLite store, artifacts go beside the database (``mlartifacts/``),
    where ``SweepLogger`` puts them too, not into the caller's cwd.
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    root = mlflow_artifact_root(tracking_uri)
    if root:
        cmd += ["--artifacts-destination", root]
    return cmd


def start_ui(tracking_uri: str, port: int, *, workers: int = 1, quiet: bool = False) -> UiServer:
    """Start the server in its own process group (the caller stops it, e.g. ``stop()``);
    does not wait for it."""
    if not 1 <= port <= 65535:
        raise ResultsError(f"bad --port {port}; allowed: 1-65535")
    out = subprocess.DEVNULL if quiet else None
    return UiServer(ui_command(tracking_uri, port, workers=workers), stdout=out, stderr=out,
                    start_new_session=True)


class _Stop(Exception):
    pass


def serve_ui(tracking_uri: str, port: int, *, workers: int = 1,
             timeout_s: float | None = None) -> int:
    """Run the server until it exits, SIGTERM/SIGINT reach this process, or ``timeout_s``
    passes; then stop its whole group. Returns the server's status if it exited by
    itself, else 0. Call from the main thread (it installs signal handlers, and
    restores the previous ones)."""
    def on_signal(signum, frame):
        raise _Stop(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server = None
    try:
        server = start_ui(tracking_uri, port, workers=workers)
        try:
            return server.wait(timeout=timeout_s)
        except (_Stop, subprocess.TimeoutExpired):
            return 0
    finally:
        if server is not None:
            # Signals would interrupt the cleanup itself: ignore them while it runs.
            for s in previous:
                signal.signal(s, signal.SIG_IGN)
            server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)


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
