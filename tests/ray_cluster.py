"""A real multi-node Ray cluster on this machine, for tests: ``LocalCluster``.

Each node is its own ``ray start`` (own raylet, object store, workers), so a node
can be lost the way a spot GPU worker is lost: ``kill_node`` SIGKILLs every
process of that node and nothing else.

Why it is built this way (all checked against Ray 2.60):

- Other Ray instances may run on this machine at the same time, so the cluster
  gets its own ``--temp-dir`` and free ports for everything that has a fixed
  default (GCS, dashboard, agents, metrics) - two nodes of one machine would
  otherwise also collide with each other on the agent ports.
- Each ``ray start`` runs in a new session (``setsid``); the daemons it spawns
  and the workers their raylet forks stay in that session, so a node's processes
  are exactly those with its session id. Teardown kills those sessions by pid
  instead of ``ray stop --force``, which would stop every Ray on the machine.
- Worker nodes get their own loopback address (127.0.0.2, ...): Tune writes the
  node's IP into every result (``node_ip``), so a test can see where each trial ran.
- The head's health check is shortened so that a killed node is declared dead in
  ~2 s instead of ~30 s (``RAY_health_check_*``).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from biohash.utils import free_port

__all__ = ["LocalCluster", "Node", "local_cluster", "free_port"]

RAY = str(Path(sys.executable).with_name("ray"))
#: Fast node-death detection (GCS health checks of raylets).
FAST_HEALTH_CHECK = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
                     "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}




@dataclass
class Node:
    """One ``ray start``: its IP as Ray reports it and the session holding its processes."""

    ip: str
    sid: int
    head: bool
    log: Path

    def pids(self) -> list[int]:
        return _session_pids(self.sid)

    @property
    def alive(self) -> bool:
        return bool(self.pids())


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``.

    Zombies are skipped: killed daemons were re-parented to a PID 1 that may never
    reap them (containers), yet they hold no resources.
    """
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError, FileNotFoundError):
            # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z" and int(fields[3]) == sid:
                out.append(int(entry))
    return out


def _local_ip(start_log: str) -> str:
    """The head's IP from ``ray start``'s "Local node IP: ..." line.

    Ray replaces a loopback ``--node-ip-address`` of the head by the machine's address,
    so the head keeps the default and the worker nodes take 127.0.0.2, ...
    """
    match = re.search(r"Local node IP: ([0-9.]+)", start_log)
    return match.group(1) if match else ""


@dataclass
class LocalCluster:
    """Head + worker nodes started with the ``ray`` CLI; see the module docstring."""

    temp_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def _start(self, args: list[str], ip: str | None, head: bool, env: Mapping[str, str]) -> Node:
        ports = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--runtime-env-agent-port", "--metrics-export-port"]
        cmd = [RAY, "start", *args, "--temp-dir", str(self.temp_dir), "--disable-usage-stats"]
        if ip:
            cmd += ["--node-ip-address", ip]
        for flag in ports:
            cmd += [flag, str(free_port())]
        log = self.temp_dir / f"start-{len(self.nodes)}.log"
        with log.open("w") as fh:
            # start_new_session: the node's daemons inherit this session id (see docstring).
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    env={**self.env, **env}, start_new_session=True)
            rc = proc.wait(timeout=120)
        text = log.read_text()
        node = Node(ip or _local_ip(text), proc.pid, head, log)
        self.nodes.append(node)
        if rc != 0:
            raise RuntimeError(f"ray start failed ({rc}): {text[-2000:]}")
        return node

    def start_head(self, num_cpus: int = 1) -> Node:
        return self._start(["--head", "--port", str(self.port), "--num-cpus", str(num_cpus),
                            "--include-dashboard=false", "--dashboard-port", str(free_port())],
                           None, True, FAST_HEALTH_CHECK)

    def add_node(self, num_cpus: int = 1, env: Mapping[str, str] | None = None) -> Node:
        """A worker node on the next loopback address; ``env`` extends the cluster's."""
        ip = f"127.0.0.{len(self.nodes) + 1}"  # head = machine IP, workers 127.0.0.2, ...
        return self._start(["--address", self.address, "--num-cpus", str(num_cpus)], ip, False,
                           env or {})

    def alive_ips(self) -> set[str]:
        """IPs of the nodes the GCS considers alive (asks in a subprocess: no driver here)."""
        code = ("import ray; ray.init(address=%r, log_to_driver=False, configure_logging=False);"
                "print(' '.join(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))")
        out = subprocess.run([sys.executable, "-c", code % self.address], env=self.env,
                             capture_output=True, text=True, timeout=60)
        return set(out.stdout.split())

    def kill_node(self, node: Node) -> None:
        """SIGKILL every process of ``node`` (raylet, agents, its trial workers)."""
        for _ in range(3):  # a dying raylet may still fork a worker: sweep again
            for pid in node.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            self.kill_node(node)


@contextlib.contextmanager
def local_cluster(workers: int = 1, *, cpus: int = 1, env: Mapping[str, str] | None = None,
                  node_env: list[Mapping[str, str]] | None = None) -> Iterator[LocalCluster]:
    """A head with ``cpus`` CPUs plus ``workers`` worker nodes; always torn down.

    ``env`` goes to every node (e.g. cloud credentials the trials need);
    ``node_env[i]`` only to worker ``i`` (e.g. its own data cache).
    """
    # Short path: Ray's unix sockets live under it (108-byte limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    full_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    cluster = LocalCluster(temp_dir, full_env)
    try:
        cluster.start_head(cpus)
        for i in range(workers):
            cluster.add_node(cpus, (node_env or [{}] * workers)[i])
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
