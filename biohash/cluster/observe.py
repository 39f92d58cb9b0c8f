"""What a rehearsal measures: nodes, trials and spot losses while it runs, results after.

:class:`Observer` is a Ray driver attached to the rehearsal cluster that
polls the GCS once a second: live nodes and their autoscaler types (the
monitor's status in the GCS maps node ids to types), trial actors (on this
cluster every actor on a worker node is a trial: the head has no CPU) and
trial placement groups (their bundles are the per-trial resources Tune
asked for). :func:`collect_results` reads what the sweep left: one Parquet
row per trial, MLflow child runs, and Tune's per-trial ``result.json``
where ``iterations_since_restore == 1`` marks every (re)start of a trial.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Observer", "collect_results", "trial_starts", "render_table"]


@dataclass
class SpotLoss:
    node: str
    node_type: str
    at_s: float
    trials: int
    replaced_by: str | None = None
    replaced_after_s: float | None = None


@dataclass
class Observer:
    """Poll the cluster; all times are seconds since ``t0`` (the sweep's launch)."""

    t0: float
    sweep_dir: Path | None = None
    head_type: str = "ray.head.default"
    node_types: dict[str, str] = field(default_factory=dict)   # node id -> type
    seen_workers: dict[str, float] = field(default_factory=dict)  # node id -> first seen alive
    alive: set[str] = field(default_factory=set)
    peak: Counter = field(default_factory=Counter)
    pid_node: dict[int, str] = field(default_factory=dict)      # trial actor pid -> node id
    busy_since: dict[str, float] = field(default_factory=dict)  # node id -> first trial seen
    busy_wall: dict[str, float] = field(default_factory=dict)   # the same, as time.time()
    max_trials_per_node: dict[str, int] = field(default_factory=dict)
    gpu_shares: set[float] = field(default_factory=set)
    first_worker_s: float | None = None
    first_trial_s: float | None = None
    losses: list[SpotLoss] = field(default_factory=list)
    pending_demand: bool = False

    def _types(self) -> None:
        """Node types and pending demand from the status the monitor keeps in the GCS."""
        from ray.experimental.internal_kv import _internal_kv_get

        status = json.loads(_internal_kv_get(b"__autoscaling_status") or b"{}")
        mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
        self.node_types.update(mapping)
        load = status.get("load_metrics_report") or {}
        self.pending_demand = bool(load.get("resource_demand") or load.get("pg_demand"))

    def poll(self) -> None:
        import ray
        import ray._private.state

        now = time.monotonic() - self.t0
        self._types()
        self.see_workers(now, {n["NodeID"] for n in ray.nodes() if n.get("Alive")
                               and "node:__internal_head__" not in n["Resources"]})
        running: Counter = Counter()
        for actor in ray._private.state.state.actor_table(None).values():
            node = (actor.get("Address") or {}).get("NodeID")
            if actor.get("State") == "ALIVE" and node in self.alive:
                self.pid_node[int(actor["Pid"])] = node
                running[node] += 1
                self.busy_since.setdefault(node, now)
                self.busy_wall.setdefault(node, time.time())
                if self.first_trial_s is None:
                    self.first_trial_s = now
        for node, n in running.items():
            self.max_trials_per_node[node] = max(self.max_trials_per_node.get(node, 0), n)
        for pg in ray.util.placement_group_table().values():
            for bundle in (pg.get("bundles") or {}).values():
                if bundle.get("GPU"):
                    self.gpu_shares.add(float(bundle["GPU"]))
        self._note_replacements(now)

    def see_workers(self, now: float, gcs_alive: set[str]) -> None:
        """Take the GCS's live workers at ``now``: first sightings and peak count per type.

        A worker this rehearsal has lost is gone at once, as a reclaimed instance is gone
        from the cloud's list: the GCS still calls it alive until its health checks
        fail (~5 s), by which time the provider may have started its replacement, and
        counting both would report more workers than ``max_workers`` ever allowed.
        """
        self.alive = gcs_alive - {loss.node for loss in self.losses}
        for node in self.alive:
            self.seen_workers.setdefault(node, now)
            if self.first_worker_s is None:
                self.first_worker_s = now
        for name, count in Counter(self.node_types.get(n, "?") for n in self.alive).items():
            self.peak[name] = max(self.peak[name], count)

    def _note_replacements(self, now: float) -> None:
        # A replacement is a worker first seen after the loss that replaces no earlier loss
        # (two losses close together must not both claim the first new worker).
        claimed = {loss.replaced_by for loss in self.losses}
        for loss in self.losses:
            if loss.replaced_by is None:
                new = [n for n, t in self.seen_workers.items()
                       if t > loss.at_s and n in self.alive and n not in claimed]
                if new:
                    claimed.add(new[0])
                    loss.replaced_by = new[0]
                    loss.replaced_after_s = round(self.seen_workers[new[0]] - loss.at_s, 1)

    def _last_checkpoint(self) -> float:
        """Wall time of the newest trial checkpoint in storage (0 if none yet)."""
        if self.sweep_dir is None or not self.sweep_dir.is_dir():
            return 0.0
        return max((p.stat().st_mtime for p in self.sweep_dir.glob("*/checkpoint_*")), default=0.0)

    def victim(self, min_busy_s: float) -> str | None:
        """A live worker to lose while trials still wait (so the autoscaler must replace
        it): it has hosted trials for ``min_busy_s``, a checkpoint reached storage since
        its first trial started (the loss interrupts trials with something to resume
        from), and it was not lost before."""
        if not self.pending_demand:  # no trial waiting: the autoscaler would not replace it
            return None
        now = time.monotonic() - self.t0
        lost = {loss.node for loss in self.losses}
        newest = self._last_checkpoint()
        for node in sorted(self.alive, key=lambda n: self.busy_since.get(n, now)):
            if node not in lost and now - self.busy_since.get(node, now) >= min_busy_s \
                    and newest > self.busy_wall.get(node, float("inf")):
                return node
        return None

    def record_loss(self, node: str) -> None:
        trials = sum(1 for n in self.pid_node.values() if n == node)
        self.losses.append(SpotLoss(node, self.node_types.get(node, "?"),
                                    round(time.monotonic() - self.t0, 1), trials))

    @property
    def replacing(self) -> bool:
        return any(loss.replaced_by is None for loss in self.losses)


def trial_starts(result_json: Path) -> tuple[list[int], list[int]]:
    """(epochs each (re)start resumed from, actor pids) of one trial's Tune ``result.json``.

    Each line is one report; a report with ``iterations_since_restore == 1``
    is the first after a (re)start, and its epoch minus one is the epoch of
    the checkpoint it continued from (0 = from scratch). The final report has
    the last epoch too, so it never looks like a start unless it is the only one.
    """
    resumed, pids = [], []
    if not result_json.is_file():
        return resumed, pids
    for line in result_json.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("pid") is not None:
            pids.append(int(row["pid"]))
        if row.get("iterations_since_restore") == 1:
            resumed.append(max(0, int(row.get("epoch") or 1) - 1))
    return resumed, pids


def _parquet_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from biohash.storage import TRIALS, is_row_file, resolve, results_dir

    folder = Path(results_dir(resolve(str(sweep_dir)), TRIALS).path)
    rows = []
    for path in sorted(folder.glob("*")):
        if not is_row_file(path.name):  # the reader's snapshot, temp files
            continue
        table = pq.read_table(path)
        cols = [c for c in ("trial_id", "status", "hw/device", "score") if c in table.column_names]
        rows.extend(table.select(cols).to_pylist())
    return rows


def _mlflow_children(tracking_uri: str, sweep: str) -> list[str]:
    """``biohash.trial_id`` of every child run under the sweep's parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(ids, filter_string=f"tags.`biohash.sweep` = '{sweep}' AND "
                                                    f"tags.`biohash.role` = 'sweep'")
    out = []
    for parent in parents:
        runs = client.search_runs(ids, filter_string=f"tags.mlflow.parentRunId = "
                                                     f"'{parent.info.run_id}'", max_results=10000)
        out.extend(r.data.tags.get("biohash.trial_id", "?") for r in runs)
    return out


def collect_results(sweep_dir: Path, sweep: str, tracking_uri: str,
                    pid_node: dict[int, str]) -> dict[str, Any]:
    """Parquet rows, MLflow child runs and per-trial (re)starts of a finished sweep."""
    rows = _parquet_rows(sweep_dir)
    children = _mlflow_children(tracking_uri, sweep)
    starts, failures, per_node = {}, {}, Counter()
    for folder in sorted(p for p in sweep_dir.iterdir() if (p / "result.json").is_file()):
        resumed, pids = trial_starts(folder / "result.json")
        starts[folder.name] = resumed
        errors = folder / "error.txt"  # Tune appends "Failure # n" for every failed attempt
        if errors.is_file():
            failures[folder.name] = errors.read_text().count("Failure #")
        if pids:  # the node that finished it: the pid of its last report
            per_node[pid_node.get(pids[-1], "?")] += 1
    # A start after the first, or a first start past epoch 0 (when Tune kept only the
    # last attempt's reports), continued from a checkpoint at that epoch.
    restarted = {k: [e for i, e in enumerate(v) if i > 0 or e > 0] for k, v in starts.items()}
    return {
        "parquet_rows": len(rows), "parquet_trials": len({r.get("trial_id") for r in rows}),
        "statuses": dict(Counter(str(r.get("status")) for r in rows)),
        "devices": dict(Counter(str(r.get("hw/device")) for r in rows)),
        "mlflow_children": len(children), "mlflow_trials": len(set(children)),
        "trial_starts": starts, "trials_per_node": dict(per_node),
        "failures": failures,
        "restarted": {k: v for k, v in restarted.items() if v or failures.get(k)},
    }


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(mapping.items())) or "-"


def _loss(x: dict[str, Any]) -> str:
    where = f"{x['node'][-5:]} ({x['node_type']}, {x['trials']} trials) at {x['at_s']} s"
    if not x["replaced_by"]:
        return f"{where} -> not replaced"
    return f"{where} -> replaced by {x['replaced_by'][-5:]} after {x['replaced_after_s']} s"


def _resumed(res: dict[str, Any]) -> str:
    parts = []
    for folder, epochs in sorted(res.get("restarted", {}).items()):
        failed = res.get("failures", {}).get(folder, 0)
        start = ", ".join(map(str, epochs)) or "0 (no checkpoint yet)"
        parts.append(f"{folder.rsplit('-', 1)[-1]}: {failed} failed, resumed from {start}")
    return "; ".join(parts) or "none"


def render_table(report: dict[str, Any]) -> str:
    """The rehearsal report as a two-column markdown table."""
    res = report.get("results", {})
    types = report.get("node_types", {})
    per_node = {f"{k[-5:]} ({types.get(k, '?')})": v
                for k, v in res.get("trials_per_node", {}).items()}
    rows = [
        ("cluster file", report["cluster_file"]),
        ("launch command", f"`{report['command']}`"),
        ("launch check sees", report.get("launch_check", "-")),
        ("time to first worker", _seconds(report.get("first_worker_s"))),
        ("time to first running trial", _seconds(report.get("first_trial_s"))),
        ("peak workers per type", _pairs(report.get("peak_workers", {}))),
        ("trials per worker (finished there)", _pairs(per_node)),
        ("most trials at once on one worker",
         max(report.get("max_trials_per_node", {}).values(), default=0)),
        ("GPU share per trial", ", ".join(f"{g:g}" for g in report.get("gpu_shares", [])) or "-"),
        ("spot losses (worker killed -> replacement)",
         "; ".join(_loss(x) for x in report.get("losses", [])) or "none"),
        ("interrupted trials", _resumed(res)),
        ("sweep wall time", _seconds(report.get("sweep_s"))),
        ("scale back to zero (after the sweep)", _seconds(report.get("scale_to_zero_s"))),
        ("Parquet rows / distinct trials",
         f"{res.get('parquet_rows')} / {res.get('parquet_trials')}"),
        ("trial statuses", _pairs(res.get("statuses", {}))),
        ("device the trials used", _pairs(res.get("devices", {}))),
        ("MLflow child runs / distinct trials",
         f"{res.get('mlflow_children')} / {res.get('mlflow_trials')}"),
        ("sweep exit status", report.get("sweep_rc")),
    ]
    lines = ["| what | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines)
