"""``biohash cluster rehearse``: the cloud launch, on this machine, before paying for it.

From the cluster file the user will ``ray up``, it starts Ray's real
autoscaler with the fake multi-node provider (:mod:`biohash.cluster.fake`),
starts MLflow with the head's own start line from the file (on 127.0.0.1, a
free port, a ``file://`` bucket), and runs the README's launch command
``biohash sweep run --space ... --address ... --gpus-per-trial 0.5
--cpus-per-trial ...`` against it. While trials run it loses worker nodes
(SIGKILL of the node's raylet and everything under it, like a reclaimed spot
instance) and watches the autoscaler replace them. It ends with a table:
time to the first worker and first trial, peak workers per type, trials per
worker, GPU share per trial, spot losses and the epochs interrupted trials
resumed from, time to scale back to zero, Parquet rows and MLflow runs.

Everything is validated before anything starts; everything started (Ray's
session, the MLflow server's session, the sweep driver's session) is
stopped by pid on success, failure, Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from biohash.cluster.config import head_type_name, load_cluster_file
from biohash.cluster.fake import (FakeCluster, fake_autoscaling_config, kill_pids,
                                  session_pids)
from biohash.errors import ConfigError, SweepError
from biohash.storage import bucket_storage, sweep_dir
from biohash.utils import free_port

__all__ = ["RehearsalOptions", "rehearse", "mlflow_start_line"]

SWEEP_NAME = "rehearsal"
_RAY_LIFECYCLE = re.compile(r"\bray\s+(start|stop)\b")
_PUBLISH = re.compile(r"\bbiohash\s+cluster\s+publish\b")


@dataclass(frozen=True)
class RehearsalOptions:
    """What ``biohash cluster rehearse`` accepts (see its ``--help``)."""

    cluster_file: str = "cluster.yaml"
    space: str = "demo"
    gpus_per_trial: float = 0.5
    cpus_per_trial: float = 2.0
    spot_losses: int = 2
    idle_timeout_s: float = 30.0
    max_workers: int = 2
    node_types: tuple[str, ...] = ()
    kill_after_s: float = 6.0
    workdir: str | None = None
    timeout_s: float = 900.0
    #: Cut every trial to this many epochs (None: the space's own). The
    #: rehearsal proves the cluster's mechanics, which need only short trials.
    epochs: int | None = None

    def check(self) -> None:
        if self.spot_losses < 0:
            raise ConfigError(f"bad --spot-losses {self.spot_losses!r}; allowed: an integer >= 0")
        if self.idle_timeout_s <= 0:
            raise ConfigError(f"bad --idle-timeout {self.idle_timeout_s!r}; allowed: seconds > 0")
        if self.gpus_per_trial < 0 or self.cpus_per_trial <= 0:
            raise ConfigError(f"bad --gpus-per-trial {self.gpus_per_trial!r} / --cpus-per-trial "
                              f"{self.cpus_per_trial!r}; allowed: GPUs >= 0, CPUs > 0")
        if self.max_workers < 1:
            raise ConfigError(f"bad --max-workers {self.max_workers!r}; allowed: an integer >= 1")
        if self.timeout_s <= 0:
            raise ConfigError(f"bad --timeout {self.timeout_s!r}; allowed: seconds > 0")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ConfigError(f"bad --epochs {self.epochs!r}; allowed: an integer >= 1")
        if self.workdir and Path(self.workdir).exists() and any(Path(self.workdir).iterdir()):
            raise ConfigError(f"bad --workdir {self.workdir!r}: it is not empty; a rehearsal "
                              f"starts from an empty folder")


def mlflow_start_line(config: Mapping[str, Any], source: str) -> tuple[str, int]:
    """The head start line that launches ``mlflow server``, and its port."""
    for line in config.get("head_start_ray_commands") or []:
        if "mlflow server" in line:
            port = re.search(r"--port[= ](\d+)", line)
            if port is None:
                raise ConfigError(f"{source}: key head_start_ray_commands: the mlflow server line "
                                  f"has no --port; the rehearsal must know where it listens")
            return line, int(port.group(1))
    raise ConfigError(f"{source}: key head_start_ray_commands: no 'mlflow server' line; the "
                      f"rehearsal starts MLflow exactly as the head does")


@dataclass
class _Session:
    """A process started in its own session; ``stop`` kills that session by pid."""

    sid: int
    proc: subprocess.Popen | None = None

    def stop(self) -> None:
        for _ in range(3):
            kill_pids(session_pids(self.sid), self.sid)
            time.sleep(0.1)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)


def _interrupt(signum, frame) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _catch_sigterm() -> None:
    """SIGTERM (a test's timeout, ``kill``) takes the same cleanup path as Ctrl-C.

    Called again after ``ray.init``, which installs Ray's own handler (it aborts).
    """
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, _interrupt)


class _Sessions(list):
    """The sessions started so far, also written to ``sessions.json`` as they start: if
    the rehearsal itself is SIGKILLed (no cleanup can run), that file says what to kill."""

    def __init__(self, path: Path, cluster: FakeCluster) -> None:
        super().__init__()
        self.path, self.cluster = path, cluster

    def append(self, session: _Session) -> None:
        super().append(session)
        self.record()

    def extend(self, sessions) -> None:
        for session in sessions:
            self.append(session)

    def record(self) -> None:
        sids = [s.sid for s in self] + ([self.cluster.sid] if self.cluster.sid else [])
        alive = [sid for sid in sids if session_pids(sid)]
        self.path.write_text(json.dumps({"sessions": sids, "alive": alive}))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    _catch_sigterm()
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous)


def _prepare(opts: RehearsalOptions) -> tuple[dict[str, Any], Any]:
    """Everything checked before anything starts: file, schema, head, MLflow line, space."""
    from biohash.search_spaces import load_space

    opts.check()
    source = str(Path(opts.cluster_file).expanduser())
    config = load_cluster_file(source)
    fake_autoscaling_config(config, source, gcs_address="127.0.0.1:0", idle_timeout_minutes=1,
                            max_workers=opts.max_workers, only_types=opts.node_types)
    mlflow_start_line(config, source)
    return config, _cut_epochs(load_space(opts.space), opts.epochs)


def _cut_epochs(space: Any, epochs: int | None) -> Any:
    """``space`` with ``ep`` fixed to ``epochs`` (``--epochs``); the space itself if None.

    Only a space that leaves ``ep`` to ``fixed`` (or to the default) can be
    cut: where ``ep`` is a grid axis, an override or a sampled value, cutting
    it would merge trials, so that is refused.
    """
    from biohash.search_spaces import SearchSpace

    if epochs is None:
        return space
    raw = copy.deepcopy(dict(space.raw))
    for section in ("grid", "sample", "overrides", "exclude"):
        if _has_key(raw.get(section), "ep"):
            raise ConfigError(f"bad --epochs {epochs}: space {space.source!r} sets 'ep' in "
                              f"{section}; allowed: --epochs only for spaces that fix 'ep'")
    raw["fixed"] = {**(raw.get("fixed") or {}), "ep": epochs}
    raw["description"] = f"{raw.get('description', space.name)} (rehearsal: {epochs} epochs)"
    return SearchSpace.from_dict(raw, name=f"{space.name}-ep{epochs}")


def _has_key(node: Any, key: str) -> bool:
    """Whether ``key`` is a mapping key anywhere in a parsed YAML tree."""
    if isinstance(node, Mapping):
        return key in node or any(_has_key(v, key) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_has_key(v, key) for v in node)
    return False


def _write_space(space: Any, work: Path) -> str:
    """The space as a YAML file in the workdir: what the sweep driver is given."""
    import yaml

    path = work / f"space-{space.name}.yaml"
    path.write_text(yaml.safe_dump(dict(space.raw), sort_keys=False))
    return str(path)


def _env(base: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **base}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "BIOHASH_STORAGE", "BIOHASH_DATA_ROOT"):
        env.pop(key, None)
    return env


def _bucket(work: Path) -> Path:
    """The rehearsal's bucket: a local folder standing for ``BIOHASH_BUCKET``."""
    return work / "bucket"


def _sweeps(work: Path) -> str:
    """Sweep storage in the rehearsal's bucket, where the head's nodes put it."""
    return bucket_storage(str(_bucket(work)))


def _start_head_commands(config: Mapping[str, Any], work: Path, gcs: str, mlflow_port: int,
                         env: dict[str, str]) -> list[_Session]:
    """The head's start lines except ``ray start``/``ray stop`` (done by the fake
    cluster; ``ray stop`` would stop every Ray of this machine) and ``biohash
    cluster publish`` (see :func:`_publish_like_the_head`), with HOME, the
    bucket, the GCS and the MLflow port of the rehearsal."""
    sessions = []
    home, bucket = work / "head-home", _bucket(work)
    home.mkdir()
    bucket.mkdir()
    line_env = {**env, "HOME": str(home), "BIOHASH_BUCKET": bucket.as_uri(), "RAY_ADDRESS": gcs}
    for i, line in enumerate(config.get("head_start_ray_commands") or []):
        if _RAY_LIFECYCLE.search(line):
            continue
        if "mlflow server" in line:
            line = re.sub(r"--port[= ]\d+", f"--port {mlflow_port}", line)
        if _PUBLISH.search(line):  # needs the GCS: run after the fake cluster is up
            continue
        with (work / f"head-start-{i}.log").open("w") as log:
            proc = subprocess.Popen(["bash", "-c", line], env=line_env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            sessions.append(_Session(proc.pid, proc))
            if proc.wait(timeout=120) != 0:
                raise SweepError(f"head start line {i} failed ({proc.returncode}); see {log.name} "
                                 f"in {work}")
    return sessions


def _publish_like_the_head(config: Mapping[str, Any], work: Path, gcs: str,
                          env: dict[str, str]) -> None:
    """Run the head's ``biohash cluster publish`` line, once the GCS is up, on the
    rehearsal's autoscaling config (the head's ``~/ray_bootstrap_config.yaml``)."""
    for i, line in enumerate(config.get("head_start_ray_commands") or []):
        if not _PUBLISH.search(line):
            continue
        cmd = [str(Path(sys.executable).with_name("biohash")), "cluster", "publish",
               str(work / "autoscaling.yaml"), "--address", gcs]
        with (work / f"head-start-{i}.log").open("w") as log:
            if subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=300).returncode != 0:
                raise SweepError(f"head start line {i} (biohash cluster publish) failed; see "
                                 f"{log.name} in {work}")


def _wait_mlflow(port: int, timeout_s: float, log: Path) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return
        time.sleep(0.5)
    tail = log.read_text()[-500:] if log.is_file() else ""
    raise SweepError(f"the head's MLflow server did not answer on 127.0.0.1:{port} within "
                     f"{timeout_s:.0f} s: {tail}")


def _launch_check(cluster_file: str, cpus: float, gpus: float) -> str:
    """What the launch check sees from here, and what a driver that sees only the GCS sees."""
    from biohash.cluster.config import node_types_from_gcs
    from biohash.orchestrator.resources import autoscaler_node_types, check_satisfiable

    check_satisfiable(cpus, gpus)
    found = autoscaler_node_types()
    gcs = "yes" if node_types_from_gcs() else \
        "no (add `biohash cluster publish` to head_start_ray_commands for drivers off the head)"
    return f"accepted via {found.source}; node types in the GCS: {gcs}"


def sweep_command(opts: RehearsalOptions, space: str, gcs: str, mlflow_port: int,
                  work: Path) -> list[str]:
    """The README's launch command, pointed at the rehearsal cluster and its storage."""
    biohash = str(Path(sys.executable).with_name("biohash"))
    return [biohash, "sweep", "run", "--space", space, "--name", SWEEP_NAME,
            "--address", gcs, "--gpus-per-trial", f"{opts.gpus_per_trial:g}",
            "--cpus-per-trial", f"{opts.cpus_per_trial:g}", "--resume",
            "--storage", _sweeps(work), "--data-root", str(work / "data"),
            "--mlflow-uri", f"http://127.0.0.1:{mlflow_port}",
            # every epoch: a lost trial resumes from its last epoch (the cloud default, 300 s,
            # is longer than a whole demo trial); enough retries for the losses injected
            "--checkpoint-interval", "0", "--max-failures", str(max(2, opts.spot_losses + 1)),
            "--tune-verbose", "0"]


def _watch(opts: RehearsalOptions, cluster: FakeCluster, proc: subprocess.Popen,
           observer) -> float:
    """Poll until the sweep ends, injecting spot losses; returns the sweep's seconds."""
    deadline = observer.t0 + opts.timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise SweepError(f"the rehearsal sweep ran past --timeout {opts.timeout_s:g} s")
        observer.poll()
        if len(observer.losses) < opts.spot_losses and not observer.replacing:
            node = observer.victim(opts.kill_after_s)
            if node is not None:
                observer.record_loss(node)
                cluster.kill_node(node)
        time.sleep(1.0)
    return time.monotonic() - observer.t0


def _wait_zero(observer, timeout_s: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        observer.poll()
        if not observer.alive:
            return time.monotonic() - start
        time.sleep(1.0)
    return None


def _prepare_data(space, data_root: Path) -> None:
    """Embedded datasets (DIGITS) are built once here, not by the first trials at once."""
    from biohash.search_spaces import plan

    the_plan = plan(space, data_root=str(data_root))
    if the_plan.problems:
        raise ConfigError(f"space {space.name!r} cannot run in a rehearsal: "
                          + "; ".join(the_plan.problems))
    from biohash.data import open_store

    for name, status in the_plan.data.items():
        if status.auto and not status.ready:
            open_store(name, data_root)


def rehearse(opts: RehearsalOptions) -> dict[str, Any]:
    """Run the rehearsal; returns the report (also in ``<workdir>/rehearsal.json``)."""
    config, space = _prepare(opts)
    work = Path(opts.workdir or tempfile.mkdtemp(prefix="biohash-rehearsal-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="bhr", dir="/tmp"))  # short: unix socket paths
    # Every fake node's CPUs are this machine's few cores: a trial's torch takes one thread
    # (Ray would give it one per CPU of its bundle, and four trials x two spinning OpenMP
    # threads on two cores were seen to make a 0.4 s DIGITS epoch take 13 s).
    env = _env({"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true",
                "OMP_NUM_THREADS": "1"})
    port, mlflow_port = free_port(), free_port()
    gcs = f"127.0.0.1:{port}"
    fake = fake_autoscaling_config(config, opts.cluster_file, gcs_address=gcs,
                                   idle_timeout_minutes=opts.idle_timeout_s / 60,
                                   max_workers=opts.max_workers, only_types=opts.node_types)
    (work / "autoscaling.yaml").write_text(json.dumps(fake, indent=2))
    load_cluster_file(work / "autoscaling.yaml")  # the derived file passes Ray's schema too
    _prepare_data(space, work / "data")
    cluster = FakeCluster(work / "autoscaling.yaml", ray_tmp, port, env, log=work / "ray-start.log")
    sessions = _Sessions(work / "sessions.json", cluster)
    report: dict[str, Any] = {"cluster_file": opts.cluster_file, "workdir": str(work),
                              "options": asdict(opts)}
    try:
        with _sigterm_as_interrupt():
            space_arg = opts.space if opts.epochs is None else _write_space(space, work)
            report.update(_run(opts, config, cluster, sessions, work, env, mlflow_port,
                               space_arg))
    finally:
        for session in reversed(sessions):
            session.stop()
        _disconnect()
        cluster.stop()
        sessions.record()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    (work / "rehearsal.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _run(opts: RehearsalOptions, config: Mapping[str, Any], cluster: FakeCluster,
         sessions: _Sessions, work: Path, env: dict[str, str],
         mlflow_port: int, space: str) -> dict[str, Any]:
    import ray

    from biohash.cluster.observe import Observer, collect_results

    # MLflow first: its line returns at once and the server starts (slowly) while Ray does.
    sessions.extend(_start_head_commands(config, work, cluster.address, mlflow_port, env))
    cluster.start()
    sessions.record()
    _wait_mlflow(mlflow_port, 300, work / "head-home" / "mlflow" / "server.log")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray's C++ failure handler would turn SIGTERM into an abort that skips our cleanup.
    os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    _publish_like_the_head(config, work, cluster.address, env)
    _catch_sigterm()
    # The observer would echo every raylet death (the spot losses we cause) into the
    # report; Ray turns this same switch off while a debugger breakpoint is active.
    ray._private.worker._worker_logs_enabled = False
    check = _launch_check(opts.cluster_file, opts.cpus_per_trial, opts.gpus_per_trial)
    cmd = sweep_command(opts, space, cluster.address, mlflow_port, work)
    with (work / "sweep.log").open("w") as log:
        observer = Observer(time.monotonic(), Path(sweep_dir(_sweeps(work), SWEEP_NAME).path))
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
                                start_new_session=True)
        sessions.append(_Session(proc.pid, proc))
        sweep_s = _watch(opts, cluster, proc, observer)
    zero_s = _wait_zero(observer, opts.idle_timeout_s + 120)
    results = collect_results(Path(sweep_dir(_sweeps(work), SWEEP_NAME).path), SWEEP_NAME,
                              f"http://127.0.0.1:{mlflow_port}", observer.pid_node)
    return {
        "command": " ".join(["biohash", *cmd[1:]]), "launch_check": check,
        "head_type": head_type_name(config, opts.cluster_file),
        "sweep_rc": proc.returncode, "sweep_s": round(sweep_s, 1),
        "first_worker_s": observer.first_worker_s, "first_trial_s": observer.first_trial_s,
        "peak_workers": {k: v for k, v in observer.peak.items() if k != "?"},
        "node_types": observer.node_types, "max_trials_per_node": observer.max_trials_per_node,
        "gpu_shares": sorted(observer.gpu_shares),
        "losses": [asdict(loss) for loss in observer.losses],
        "scale_to_zero_s": None if zero_s is None else round(zero_s, 1),
        "results": results, "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
