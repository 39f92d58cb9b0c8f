"""``biohash cluster rehearse``: the derived fake-multi-node config, bad input, the
CPU fallback of a trial placed on a (fake) GPU, and one full rehearsal on the demo
space with Ray's real autoscaler, spot losses included."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from biohash.cli import main
from biohash.cluster.config import load_cluster_file
from biohash.cluster.fake import FAKE_HEAD_TYPE, FAKE_PROVIDER, fake_autoscaling_config
from biohash.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FILES = {"aws": ROOT / "cluster.yaml", "gcp": ROOT / "cluster-gcp.yaml"}


@pytest.fixture(params=sorted(FILES))
def cluster(request) -> tuple[str, dict]:
    path = FILES[request.param]
    return str(path), yaml.safe_load(path.read_text())


def _fake(source: str, config: dict, **kw) -> dict:
    return fake_autoscaling_config(config, source, gcs_address="127.0.0.1:1234",
                                   idle_timeout_minutes=0.5, **kw)


def test_fake_config_keeps_the_node_types_and_drops_the_cloud(cluster):
    source, config = cluster
    fake = _fake(source, config)
    head = config["head_node_type"]
    assert fake["head_node_type"] == FAKE_HEAD_TYPE
    assert fake["available_node_types"][FAKE_HEAD_TYPE]["resources"] == {"CPU": 0}
    for name, spec in config["available_node_types"].items():
        if name == head:
            continue
        got = fake["available_node_types"][name]
        assert got["resources"] == spec["resources"]
        assert (got["min_workers"], got["max_workers"]) == (spec["min_workers"], spec["max_workers"])
        assert got["node_config"] == {}
    assert fake["upscaling_speed"] == config["upscaling_speed"]
    assert fake["max_workers"] == config["max_workers"]
    assert fake["idle_timeout_minutes"] == 0.5 < config["idle_timeout_minutes"]
    assert fake["provider"] == {"type": "external", "module": FAKE_PROVIDER,
                                "use_node_id_as_ip": True,
                                "disable_node_updaters": True, "disable_launch_config_check": True,
                                "gcs_address": "127.0.0.1:1234"}
    text = json.dumps(fake)
    for cloud in ("InstanceType", "machineType", "docker", "BIOHASH_BUCKET", "ssh_user", "image"):
        assert cloud not in text or cloud == "docker" and fake["docker"] == {}


def test_fake_config_passes_rays_schema_and_validation(cluster, tmp_path):
    """Ray's ``prepare_config`` would merge the provider's defaults from its
    ``example.yaml``, which the pip wheel lacks: the config is complete without it."""
    from ray.autoscaler._private.util import validate_config

    source, config = cluster
    path = tmp_path / "fake.yaml"
    path.write_text(json.dumps(_fake(source, config)))
    load_cluster_file(path)
    validate_config(copy.deepcopy(_fake(source, config)))


def test_rays_provider_loader_finds_the_reclaimable_fake_provider():
    """Ray's monitor resolves ``provider.module`` with this same loader."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
    from ray.autoscaler._private.providers import _get_node_provider_cls

    from biohash.cluster.fake_provider import ReclaimableFakeProvider

    cls = _get_node_provider_cls({"type": "external", "module": FAKE_PROVIDER})
    assert cls is ReclaimableFakeProvider and issubclass(cls, FakeMultiNodeProvider)


def test_machine_limits_lower_bounds_and_pick_types(cluster):
    source, config = cluster
    worker = next(n for n in config["available_node_types"] if n != config["head_node_type"])
    fake = _fake(source, config, max_workers=2, only_types=(worker,))
    assert fake["max_workers"] == 2
    assert set(fake["available_node_types"]) == {FAKE_HEAD_TYPE, worker}
    with pytest.raises(ConfigError, match="unknown node type"):
        _fake(source, config, only_types=("nope",))


def test_a_head_that_runs_trials_is_refused_naming_file_and_key(cluster):
    source, config = cluster
    config["available_node_types"][config["head_node_type"]]["resources"] = {"CPU": 8}
    with pytest.raises(ConfigError, match=rf"{source}: key available_node_types\.\w+\.resources"
                                          r"\.CPU is 8; the head must run no trials"):
        _fake(source, config)


def _bad(tmp_path: Path, mutate) -> Path:
    config = yaml.safe_load(FILES["aws"].read_text())
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _drop_mlflow(c):
    c["head_start_ray_commands"] = [x for x in c["head_start_ray_commands"] if "mlflow" not in x]


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["available_node_types"]["head"].update(resources={"CPU": 2}),
     "key available_node_types.head.resources.CPU is 2"),
    (lambda c: c["available_node_types"]["gpu_1x_a10g"].pop("resources"),
     "key available_node_types.gpu_1x_a10g: 'resources' is a required property"),
    (lambda c: c.update(max_workers="ten"), "key max_workers"),
    (_drop_mlflow, "key head_start_ray_commands: no 'mlflow server' line"),
    (lambda c: [t.update(max_workers=0) for t in c["available_node_types"].values()],
     "no worker type may start"),
])
def test_bad_cluster_files_stop_the_rehearsal_before_anything_starts(tmp_path, capsys, mutate,
                                                                       message):
    path = _bad(tmp_path, mutate)
    work = tmp_path / "work"
    assert main(["cluster", "rehearse", str(path), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and err.count("\n") == 1
    assert not work.exists()  # nothing was created, let alone started


def test_unparsable_file_and_busy_workdir(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("available_node_types: {head: [\n")
    assert main(["cluster", "rehearse", str(path)]) == 2
    assert f"{path}: line" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    assert main(["cluster", "rehearse", str(FILES["aws"]), "--workdir", str(tmp_path / "used")]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_trial_starts_reads_resume_points_from_tunes_result_json(tmp_path):
    """Tune's result.json of a trial lost after epoch 1 and retried from that checkpoint
    (the lines a rehearsal produced: epoch, iterations_since_restore, pid)."""
    from biohash.cluster.observe import trial_starts

    rows = [(1, 1, 31045), (2, 1, 31185), (3, 2, 31185), (4, 3, 31185), (4, 4, 31185)]
    path = tmp_path / "result.json"
    path.write_text("\n".join(json.dumps({"epoch": e, "iterations_since_restore": i, "pid": p})
                              for e, i, p in rows))
    assert trial_starts(path) == ([0, 1], [31045] + [31185] * 4)
    assert trial_starts(tmp_path / "missing.json") == ([], [])


def test_a_lost_worker_leaves_the_count_before_the_gcs_declares_it_dead():
    """The GCS calls a killed worker alive for ~5 s; its replacement may come up sooner
    (it did in CI): the peak must stay at what the provider ran, and the replacement is
    the new worker, not the lost one."""
    from biohash.cluster.observe import Observer

    obs = Observer(t0=0.0, node_types={"a": "gpu", "b": "gpu", "c": "gpu"})
    obs.see_workers(1.0, {"a", "b"})
    obs.record_loss("a")
    loss_at = obs.losses[0].at_s
    obs.see_workers(loss_at + 1, {"a", "b", "c"})  # "a" not yet declared dead by the GCS
    obs._note_replacements(loss_at + 1)
    assert obs.peak == {"gpu": 2} and obs.alive == {"b", "c"}
    assert obs.losses[0].replaced_by == "c"


# ------------------------------------------------------- a trial placed on a fake GPU

CPU_FALLBACK = """
import warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from biohash.utils import resolve_device
    devices = [str(resolve_device()), str(resolve_device("auto"))]
    from biohash.pipeline.run import _device_label
    from biohash.pipeline.runtime import Runtime
    label = _device_label(Runtime())
try:
    resolve_device("cuda")
    explicit = "accepted"
except Exception as exc:
    explicit = type(exc).__name__
import json
print(json.dumps({"devices": devices, "label": label, "explicit": explicit,
                  "warnings": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
"""


def test_a_trial_given_a_gpu_without_usable_cuda_runs_on_cpu_with_one_warning():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is usable here; this checks the fallback on a CPU machine")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}  # what Ray sets for a trial on GPU 0
    out = subprocess.run([sys.executable, "-c", CPU_FALLBACK], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == ["cpu", "cpu"] and got["label"] == "cpu"  # never claims a GPU
    assert len(got["warnings"]) == 1 and "CUDA_VISIBLE_DEVICES='0'" in got["warnings"][0]
    assert got["explicit"] == "ConfigError"


def test_no_warning_on_a_plain_cpu_machine():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is usable here")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", CPU_FALLBACK], env=env, capture_output=True,
                         text=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == ["cpu", "cpu"] and got["warnings"] == []


# ------------------------------------------------------------------ the whole rehearsal

def _alive_sessions(work: Path) -> list[int]:
    """Sessions the rehearsal started that still have live processes (``sessions.json``)."""
    from biohash.cluster.fake import session_pids

    path = work / "sessions.json"
    sids = json.loads(path.read_text())["sessions"] if path.is_file() else []
    return [sid for sid in sids if session_pids(sid)]


def _run_rehearsal(cmd: list[str], work: Path, budget_s: float) -> tuple[int, str, list[int]]:
    """Run it; past ``budget_s`` send SIGTERM (its Ctrl-C path). Returns (rc, output,
    sessions it left alive); whatever it left is then killed here, by session."""
    import signal

    from biohash.cluster.fake import kill_pids, session_pids

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    log = work.parent / "rehearse.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
    left = _alive_sessions(work)
    for sid in left:
        kill_pids(session_pids(sid), sid)
    return rc, log.read_text(), left


@pytest.mark.slow
def test_rehearsal_of_cluster_yaml_on_the_demo_space(tmp_path):
    work = tmp_path / "rehearsal"
    cmd = [sys.executable, "-m", "biohash.cli", "cluster", "rehearse", str(FILES["aws"]),
           "--space", "demo", "--node-types", "gpu_1x_a10g", "--max-workers", "2",
           "--spot-losses", "2", "--idle-timeout", "20", "--epochs", "3",
           "--workdir", str(work), "--timeout", "600"]
    # Trials cut to 3 epochs: the mechanics (scale-up, shared GPUs, losses, resume, scale-down)
    # are the same and the test fits in the suite's budget. The timeout guards against a hang.
    rc, out, left = _run_rehearsal(cmd, work, budget_s=700)
    assert not left, f"the rehearsal left sessions {left} running"  # pass or fail, all stopped
    assert rc == 0, out[-4000:]
    report = json.loads((work / "rehearsal.json").read_text())
    res = report["results"]
    assert "accepted via the running autoscaler's config" in report["launch_check"]
    assert report["first_worker_s"] is not None and report["first_trial_s"] >= report["first_worker_s"]
    assert 1 <= report["peak_workers"]["gpu_1x_a10g"] <= 2
    assert report["gpu_shares"] == [0.5]
    assert max(report["max_trials_per_node"].values()) == 2  # two trials share each fake GPU
    # Every trial: exactly one Parquet row and one MLflow child run, none duplicated.
    assert res["parquet_rows"] == res["parquet_trials"] == 16
    assert res["mlflow_children"] == res["mlflow_trials"] == 16
    assert res["devices"] == {"cpu": 16}  # Ray gave them a (fake) GPU; they ran on the CPU
    assert set(res["statuses"]) <= {"finished", "early_stopped", "diverged"}
    # Spot losses: two workers killed while trials waited, each replaced by the autoscaler;
    # the trials they ran failed once and continued (from their checkpoint, if any).
    assert len(report["losses"]) == 2 and all(x["replaced_by"] for x in report["losses"])
    replacements = [x["replaced_by"] for x in report["losses"]]
    assert len(set(replacements)) == 2, report["losses"]  # each loss its own new worker
    # the provider drops a worker whose raylet died (as a cloud drops a reclaimed spot
    # instance), so the autoscaler starts a replacement within seconds, not after idling out
    assert all(x["replaced_after_s"] < 60 for x in report["losses"]), report["losses"]
    assert res["restarted"] and sum(res["failures"].values()) >= 2, res
    assert report["scale_to_zero_s"] is not None
    assert "| time to first worker |" in out


@pytest.mark.slow
def test_sigterm_stops_everything_the_rehearsal_started(tmp_path):
    """Ctrl-C/SIGTERM while the cluster runs: every session it started is gone after."""
    import signal
    import time

    work = tmp_path / "rehearsal"
    cmd = [sys.executable, "-m", "biohash.cli", "cluster", "rehearse", str(FILES["aws"]),
           "--node-types", "gpu_1x_a10g", "--workdir", str(work)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(_alive_sessions(work)) < 2:
            time.sleep(0.5)  # the MLflow line and the Ray head are up
        assert len(_alive_sessions(work)) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        left = _alive_sessions(work)
        from biohash.cluster.fake import kill_pids, session_pids

        for sid in left:
            kill_pids(session_pids(sid), sid)
    assert not left
