"""A cluster file's autoscaler, run on this machine: Ray's fake multi-node provider.

:func:`fake_autoscaling_config` derives, from a ``cluster.yaml``, the config
that Ray's real autoscaler runs with Ray's fake multi-node provider (through
``provider.type: external``: :mod:`biohash.cluster.fake_provider`, which
drops a worker whose raylet died, as a cloud drops a reclaimed instance): the
same node types (``resources``, ``min_workers`` / ``max_workers``), the same
cluster-wide ``max_workers`` and ``upscaling_speed``, a shortened idle
timeout, and nothing cloud-specific (``node_config``, ``auth``, ``docker``,
commands, file mounts). The fake provider starts each "node" as a real
raylet on this machine that advertises the type's resources (GPUs
included), so scheduling, scale-up, idle scale-down and node loss behave as
on the cloud; no instance is bought and no image is pulled.

Facts of Ray 2.60 this relies on (read in the wheel): the provider tags its
head ``ray.head.default``, so the head type is renamed to that; it needs
``RAY_FAKE_CLUSTER=1`` in the environment of ``ray start --head``; it reads
the GCS address from ``provider.gcs_address`` (default: this machine's IP,
port 6379), so a free port is used and nothing on 6379 is disturbed; the
pip wheel lacks Ray's ``example.yaml``, so every launcher key is written
here.

:class:`FakeCluster` starts it with ``ray start --head`` in a new session:
every process of the cluster (GCS, monitor, the fake workers' raylets and
their trial workers) carries that session id, so teardown and simulated spot
losses kill by pid exactly what was started here, nothing else.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from biohash.cluster.config import check_head_runs_no_trials, head_type_name, node_types
from biohash.errors import ConfigError, SweepError
from biohash.utils import free_port

__all__ = ["FAKE_HEAD_TYPE", "fake_autoscaling_config", "FakeCluster",
           "session_pids", "kill_pids"]

#: Ray's fake multi-node provider, made to drop a worker whose raylet died (as a cloud drops a
#: reclaimed instance); see ``biohash.cluster.fake_provider``. Named, not imported: Ray's
#: monitor loads it, and this module stays free of Ray imports.
FAKE_PROVIDER = "biohash.cluster.fake_provider.ReclaimableFakeProvider"
#: The node type Ray's fake provider gives its head node.
FAKE_HEAD_TYPE = "ray.head.default"
#: Per-type keys the autoscaler needs; the rest (node_config, docker, commands) is cloud-only.
_TYPE_KEYS = ("resources", "min_workers", "max_workers", "labels")
#: GCS health checks every second: a killed worker is declared dead in ~5 s, not ~30 s.
#: (0.5 s x 3 misses was seen to declare live raylets dead on a loaded 2-core machine.)
FAST_HEALTH_CHECK = {"RAY_health_check_initial_delay_ms": "0",
                     "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                     "RAY_health_check_failure_threshold": "5"}


def fake_autoscaling_config(config: Mapping[str, Any], source: str, *, gcs_address: str,
                            idle_timeout_minutes: float, max_workers: int | None = None,
                            only_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fake-multi-node twin of ``config`` (see the module docstring).

    ``max_workers`` lowers the cluster-wide bound (one machine hosts every
    fake node and its trials); ``only_types`` keeps just those worker types.
    Raises ``ConfigError`` for a head that would run trials, an unknown type
    name, or a cluster where no worker type can ever start.
    """
    check_head_runs_no_trials(config, source)
    head = head_type_name(config, source)
    types = node_types(config, source)
    unknown = sorted(set(only_types) - {t.name for t in types if not t.head})
    if unknown:
        raise ConfigError(f"unknown node type(s) {', '.join(unknown)} for {source}; choose from "
                          f"{', '.join(t.name for t in types if not t.head)}")
    keep = {t.name for t in types if t.head or not only_types or t.name in only_types}
    if not any(t.can_launch for t in types if t.name in keep):
        raise ConfigError(f"{source}: key available_node_types: no worker type may start "
                          f"(every max_workers is 0); nothing could run a trial")
    total = int(config.get("max_workers", 2))
    available = {}
    for name, spec in config["available_node_types"].items():
        if name not in keep:
            continue
        kept = {k: spec[k] for k in _TYPE_KEYS if k in spec}
        kept["node_config"] = {}
        if name == head:
            kept["max_workers"] = 0
        available[FAKE_HEAD_TYPE if name == head else name] = kept
    if FAKE_HEAD_TYPE in config["available_node_types"] and head != FAKE_HEAD_TYPE:
        raise ConfigError(f"{source}: key available_node_types.{FAKE_HEAD_TYPE}: the rehearsal "
                          f"names the head {FAKE_HEAD_TYPE!r}; rename that worker type")
    return {
        "cluster_name": f"{config.get('cluster_name', 'cluster')}-rehearsal",
        "max_workers": min(total, total if max_workers is None else max_workers),
        "upscaling_speed": config.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "external", "module": FAKE_PROVIDER, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs_address},
        "auth": {}, "docker": {},
        "available_node_types": available, "head_node_type": FAKE_HEAD_TYPE,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


# ---------------------------------------------------------------- processes by pid

def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses.
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[3])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``.

    Zombies are skipped: a killed daemon re-parented to a PID 1 that never
    reaps (containers) holds no resources.
    """
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(entry)
            if st and st[0] != "Z" and st[2] == sid:
                out.append(int(entry))
    return out


def _children_map(pids: list[int]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid in pids:
        st = _stat(str(pid))
        if st:
            children.setdefault(st[1], []).append(pid)
    return children


def kill_pids(pids: list[int], sid: int) -> None:
    """SIGKILL ``pids`` that still belong to session ``sid`` (never a stranger's pid reused)."""
    for pid in pids:
        st = _stat(str(pid))
        if st and st[2] == sid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@dataclass
class FakeCluster:
    """The fake autoscaling cluster's processes; ``start`` then ``stop`` (always)."""

    config_path: Path
    temp_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    sid: int | None = None
    log: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180) -> None:
        ray = str(Path(sys.executable).with_name("ray"))
        cmd = [ray, "start", "--head", "--port", str(self.port), "--num-cpus", "0",
               "--num-gpus", "0", "--temp-dir", str(self.temp_dir), "--disable-usage-stats",
               "--include-dashboard=false", f"--autoscaling-config={self.config_path}"]
        for flag in ("--dashboard-port", "--dashboard-agent-listen-port",
                     "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                     "--metrics-export-port"):
            cmd += [flag, str(free_port())]
        # A reclaimed spot instance leaves the cloud provider's node list at once; a fake
        # node whose raylet was killed stays in the provider's list until the autoscaler
        # gives up on its heartbeat (default 30 s), holding a max_workers slot meanwhile.
        env = {**self.env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "AUTOSCALER_HEARTBEAT_TIMEOUT_S": "10", **FAST_HEALTH_CHECK}
        self.log = self.log or self.temp_dir / "ray-start.log"
        with self.log.open("w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            self.sid = proc.pid  # the new session's id is its leader's pid
            rc = proc.wait(timeout=timeout_s)
        if rc != 0:
            raise SweepError(f"ray start --head failed ({rc}); see {self.log}: "
                             f"{self.log.read_text().strip().splitlines()[-1:]}")

    def pids(self) -> list[int]:
        return session_pids(self.sid) if self.sid else []

    def worker_raylets(self) -> dict[str, int]:
        """Node id (hex) -> raylet pid, for every live fake worker node."""
        out = {}
        for pid in self.pids():
            argv = _argv(pid)
            if argv and argv[0].endswith("/raylet"):
                node = next((a.split("=", 1)[1] for a in argv if a.startswith("--node_id=")), "")
                if node and not node.endswith("00000"):  # ...00000 is the fake head
                    out[node] = pid
        return out

    def kill_node(self, node_id: str) -> int:
        """A spot loss: SIGKILL the node's raylet and every process under it; returns how many."""
        raylet = self.worker_raylets().get(node_id)
        if raylet is None:
            return 0
        killed: set[int] = set()
        for _ in range(3):  # a dying raylet may still fork a worker: sweep again
            pids = self.pids()
            children = _children_map(pids)
            todo, tree = [raylet], []
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo.extend(children.get(pid, []))
            kill_pids(tree, self.sid)
            killed.update(tree)
            time.sleep(0.2)
        return len(killed)

    def stop(self) -> None:
        if not self.sid:
            return
        for _ in range(3):
            kill_pids(self.pids(), self.sid)
            time.sleep(0.2)

