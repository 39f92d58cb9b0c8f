"""Each attack tried for real and shown refused: the embedded Ray from the network or
without its token, `biohash ui` outliving a SIGTERM, a damaged MLflow backup
silently replaced by an empty store, a cluster setup script run without an SSH range.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from biohash.utils import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ process and socket views

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _tree(root: int) -> set[int]:
    kids, out, todo = _children(), set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += kids.get(pid, [])
    return out


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    except OSError:
        pass
    return out


def _hex_addr(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        addr = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        addr = ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
    return str(addr), int(port, 16)


def listeners(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket (and bound UDP socket) the
    processes ``pids`` hold, read from /proc like ``ss -ltnup`` does."""
    owner = {ino: pid for pid in pids for ino in _socket_inodes(pid)}
    out = []
    for table, listen_state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", None), ("udp6", None)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if inode in owner and (listen_state is None or fields[3] == listen_state):
                out.append((*_hex_addr(fields[1]), owner[inode]))
    return out


def _routable_ip() -> str | None:
    """This machine's address on its default route (what a neighbour would connect to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for UDP connect
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


# ------------------------------------------------------------------ embedded Ray

_DRIVER = """
import json, os, sys
from biohash.orchestrator.sweep import _init_ray
import ray
_init_ray(None, 1)
ray.get(ray.remote(lambda: 1).remote())  # a worker process exists too
info = ray._private.worker.global_worker.node.address_info
print(json.dumps({"gcs": info["gcs_address"], "node_ip": info["node_ip_address"],
                  "token": os.environ.get("RAY_AUTH_TOKEN")}), flush=True)
sys.stdin.read()
ray.shutdown()
"""

_CLIENT = """
import sys
from ray._raylet import GcsClient
print(len(GcsClient(address=sys.argv[1]).internal_kv_keys(b"", None, timeout=10)))
"""


def _gcs_call(gcs: str, auth_env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(auth_env, HOME=str(home))
    return subprocess.run([sys.executable, "-c", _CLIENT, gcs], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def embedded_ray(tmp_path_factory):
    """`sweep run`'s embedded Ray, started by `_init_ray` in its own process under the
    same environment `make test` / `make demo` give it (RAY_AUTH_MODE=disabled)."""
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HOME": str(home)}
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    proc = subprocess.Popen([sys.executable, "-c", _DRIVER], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"the embedded Ray did not start: {proc.stderr.read()[-3000:]}")
    info = json.loads(line)
    info.update(proc=proc, home=home, pids=_tree(proc.pid))
    try:
        yield info
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only(embedded_ray):
    assert embedded_ray["node_ip"] == "127.0.0.1"
    socks = listeners(embedded_ray["pids"])
    procs = {pid for _, _, pid in socks}
    assert len(procs) >= 3, socks  # GCS, raylet, workers: the check saw Ray's processes
    exposed = [(a, p) for a, p, _ in socks if not ipaddress.ip_address(a).is_loopback]
    assert exposed == [], f"listening beyond 127.0.0.1: {exposed}"


@pytest.mark.slow
def test_embedded_ray_ports_refuse_a_neighbour(embedded_ray):
    ip = _routable_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    ports = sorted({p for _, p, _ in listeners(embedded_ray["pids"])})
    assert ports
    for port in ports:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((ip, port)) != 0, f"{ip}:{port} accepted a connection"


@pytest.mark.slow
def test_embedded_ray_refuses_clients_without_its_token(embedded_ray):
    gcs, home = embedded_ray["gcs"], embedded_ray["home"]
    token = embedded_ray["token"]
    assert token and len(token) == 64
    for auth in ({"RAY_AUTH_MODE": "disabled"},
                 {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}):
        res = _gcs_call(gcs, auth, home)
        assert res.returncode != 0 and "InvalidAuthToken" in res.stderr, (auth, res.stderr[-500:])
    # The same request with the run's token is answered: the refusals above are the auth.
    ok = _gcs_call(gcs, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}, home)
    assert ok.returncode == 0, ok.stderr[-2000:]
    # Throw-away: never written where other programs (or later runs) find it.
    assert not (home / ".ray" / "auth_token").exists()


def test_embedded_tokens_are_fresh_and_long():
    from biohash.orchestrator.embedded_ray import embedded_token_env

    a, b = embedded_token_env(), embedded_token_env()
    assert a["RAY_AUTH_MODE"] == "token" and a["RAY_AUTH_TOKEN"] != b["RAY_AUTH_TOKEN"]
    assert len(bytes.fromhex(a["RAY_AUTH_TOKEN"])) == 32


# ------------------------------------------------------------------ biohash ui



def _wait_health(port: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail("the MLflow server did not answer /health")


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


def _run_ui_and_signal(tmp_path: Path, cmd: list[str], sig: int) -> tuple[int, set[int], set[int]]:
    """Start ``cmd`` (serving MLflow on a free port), wait until it answers, send ``sig``;
    returns (exit status, server pids seen while serving, those still alive after)."""
    port = free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(cmd + ["--mlflow-uri", uri, "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served: set[int] = set()
    try:
        _wait_health(port, proc)
        served = _tree(proc.pid) - {proc.pid}
        assert served, "the server runs in child processes of biohash ui"
        proc.send_signal(sig)
        status = proc.wait(timeout=60)
        deadline = time.monotonic() + 5
        while _alive(served) and time.monotonic() < deadline:
            time.sleep(0.1)
        return status, served, _alive(served)
    finally:
        for pid in _alive(served):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_biohash_ui_stops_its_whole_server_on_a_signal(tmp_path, sig):
    status, served, left = _run_ui_and_signal(tmp_path, [str(BIN / "biohash"), "ui"], sig)
    assert left == set(), f"{len(left)} of {len(served)} server processes survived {sig!r}"
    assert status == 0


@pytest.mark.slow
def test_serve_ui_stops_its_server_on_timeout(tmp_path):
    code = ("import sys; from biohash.analysis.ui import serve_ui; "
            "sys.exit(serve_ui(sys.argv[1], int(sys.argv[2]), timeout_s=float(sys.argv[3])))")
    proc = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{tmp_path / 'm.db'}",
                             str(free_port()), "20"], cwd=tmp_path)
    seen: set[int] = set()
    try:
        while proc.poll() is None:  # every process the server ever had
            seen |= _tree(proc.pid) - {proc.pid}
            time.sleep(0.5)
        assert proc.returncode == 0
        assert len(seen) >= 2, seen  # the mlflow CLI and its web server at least
        time.sleep(1)
        assert _alive(seen) == set()
    finally:
        for pid in _alive(seen):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------ MLflow store backup / restore

def _db_with_rows(path: Path, n: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO runs (name) VALUES (?)", [(f"r{i}",) for i in range(n)])


def _count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_backup_is_a_consistent_snapshot_while_a_writer_is_mid_transaction(tmp_path):
    from biohash.cluster.mlflow_store import backup_store, restore_store

    db = tmp_path / "head" / "mlflow.db"
    db.parent.mkdir()
    _db_with_rows(db, 5)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO runs (name) VALUES ('uncommitted')")
    bucket = tmp_path / "bucket"
    try:
        backup_store(db, (bucket / "mlflow" / "mlflow.db").as_uri())
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    new_head = tmp_path / "new-head" / "mlflow.db"
    assert restore_store(new_head, (bucket / "mlflow" / "mlflow.db").as_uri()) == "restored"
    assert _count(new_head) == 5
    assert restore_store(new_head, (bucket / "mlflow" / "mlflow.db").as_uri()) == "kept"
    assert restore_store(tmp_path / "x" / "mlflow.db", (bucket / "none.db").as_uri()) == "fresh"


def test_a_damaged_backup_fails_the_restore_and_leaves_no_store(tmp_path):
    from biohash.cluster.mlflow_store import restore_store
    from biohash.errors import ResultsError

    backup = tmp_path / "bucket" / "mlflow.db"
    backup.parent.mkdir()
    _db_with_rows(backup, 3)
    backup.write_bytes(backup.read_bytes()[:1000])  # truncated upload
    db = tmp_path / "head" / "mlflow.db"
    with pytest.raises(ResultsError, match="mlflow.db"):
        restore_store(db, backup.as_uri())
    assert not db.exists() and list(db.parent.iterdir()) == []


@pytest.mark.parametrize("config", ["cluster.yaml", "cluster-gcp.yaml"])
def test_the_heads_start_line_stops_when_the_restore_fails(tmp_path, config):
    """The head's real MLflow line, with a damaged bucket copy: non-zero, no server."""
    import yaml

    line = next(c for c in yaml.safe_load((ROOT / config).read_text())["head_start_ray_commands"]
                if "mlflow server" in c)
    bucket = tmp_path / "bucket"
    (bucket / "mlflow").mkdir(parents=True)
    (bucket / "mlflow" / "mlflow.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    env = {**os.environ, "HOME": str(tmp_path), "BIOHASH_BUCKET": bucket.as_uri(),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                         timeout=120, start_new_session=True)
    assert res.returncode != 0, res.stdout + res.stderr
    assert "mlflow.db" in res.stderr
    assert not (tmp_path / "mlflow" / "server.pid").exists()
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()


def test_backup_command_needs_a_bucket(tmp_path, monkeypatch, capsys):
    from biohash.cli import main

    monkeypatch.delenv("BIOHASH_BUCKET", raising=False)
    _db_with_rows(tmp_path / "m.db", 1)
    assert main(["cluster", "mlflow-backup", "--db", str(tmp_path / "m.db")]) == 2
    assert "BIOHASH_BUCKET is not set" in capsys.readouterr().err


# ------------------------------------------------------------------ one-time cloud setup scripts

@pytest.mark.parametrize("script, args", [("aws-once.sh", ["my-biohash-bucket"]),
                                          ("gcp-once.sh", ["my-project", "my-biohash-bucket"])])
@pytest.mark.parametrize("cidr, message", [
    (None, "BIOHASH_SSH_CIDR is not set"),
    ("0.0.0.0/0", "admits the whole internet"),
    ("::/0", "admits the whole internet"),
    ("203.0.113.7", None),  # a bare address is a /32: accepted, then the CLI is missing
    ("my-laptop", "is not a CIDR range"),
])
def test_setup_scripts_refuse_a_missing_or_open_ssh_range(tmp_path, script, args, cidr, message):
    # PATH with only what the checks use, never a real aws/gcloud: a script that got past
    # its checks stops at the CLI check.
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python3").symlink_to(sys.executable)
    for tool in ("bash", "dirname", "sed", "mktemp", "rm"):
        (tools / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(tools), "HOME": str(tmp_path)}
    if cidr is not None:
        env["BIOHASH_SSH_CIDR"] = cidr
    res = subprocess.run(["bash", str(ROOT / "deploy" / script), *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    expected = message or "CLI is not installed"
    assert expected in res.stderr, res.stderr
