"""The sweep's answer in MLflow (``biohash.results.mlflow_best``), read back through MLflow's client.

Real Parquet results (written as the sink writes them), a real SQLite
tracking store, ``biohash results sync-mlflow``'s code path (``backfill``).
The expected numbers are recomputed here from the Parquet rows with plain
pandas, not with ``biohash.analysis``.
"""
from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from biohash.config import TrialConfig
from biohash.results.backfill import backfill
from biohash.results.mlflow_best import BEST_FILTER, BEST_TAG
from biohash.results.mlflow_log import RUN_NAME_TAG, SweepLogger
from biohash.results.reader import load_results
from biohash.results.schema import FINAL_METRICS, history_rows, history_table, trial_row, \
    trials_table
from biohash.storage import write_table

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# (arch, mode, lr) -> score per seed. In the fa group, lr 1e-4 has the best single
# seed (0.90) but lr 1e-5 the best mean; plain vgg16 is the bp baseline.
SCORES = {
    ("vgg16", "fa", 1e-5): [0.70, 0.74],
    ("bio-vgg16", "fa", 1e-5): [0.60, 0.64],
    ("bio-vgg16", "fa", 1e-4): [0.90, 0.10],
    ("bio-vgg16", "usf", 1e-5): [0.66, 0.68],
}


def write(root, sweep: str, scores=SCORES, *, loss: str = "HashNet") -> list[TrialConfig]:
    fs, cfgs = pafs.LocalFileSystem(), []
    for (arch, mode, lr), values in scores.items():
        for nbits in (16, 32):
            for seed, score in enumerate(values):
                cfg = TrialConfig(db="CIFAR_10", loss=loss, arch=arch, mode=mode, lr=lr,
                                  nbits=nbits, seed=seed)
                value = score + nbits / 1000
                final = {"status": "finished", "score": value, "best_epoch": 2, "epochs_run": 2,
                         **{k: value for k in FINAL_METRICS}}
                hist = [{"epoch": e, "val_mAP": value * e / 2} for e in (1, 2)]
                base = f"{root}/{sweep}/results"
                write_table(fs, f"{base}/trials/{cfg.trial_id}.parquet",
                            trials_table([trial_row(sweep, cfg, final, code_version="t")]))
                write_table(fs, f"{base}/history/{cfg.trial_id}.parquet",
                            history_table(history_rows(sweep, cfg, hist)))
                cfgs.append(cfg)
    return cfgs


def expected(root, sweep: str) -> tuple[dict[str, float], set[str]]:
    """best/... metrics and best trial ids, recomputed from the Parquet rows."""
    df = load_results([root / sweep])
    per_config = df.groupby(["db", "nbits", "rule", "arch", "lr"])
    means = per_config["score"].mean().reset_index()
    best = means.loc[means.groupby(["db", "nbits", "rule"])["score"].idxmax()]
    metrics = {f"best/{r.db}/{r.nbits}/{r.rule}/score": r.score for r in best.itertuples()}
    ids = set()
    for r in best.itertuples():
        ids |= set(df[(df["db"] == r.db) & (df["nbits"] == r.nbits) & (df["arch"] == r.arch)
                      & (df["rule"] == r.rule) & (df["lr"] == r.lr)]["trial_id"])
    return metrics, ids


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one takes ~10 s); one sweep name per test."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def runs(client, sweep: str, extra: str = "") -> dict:
    exp = client.get_experiment_by_name("biohash")
    found = client.search_runs([exp.experiment_id], max_results=1000,
                               filter_string=f"tags.`biohash.sweep` = '{sweep}'" + extra)
    return {r.data.tags["biohash.role"]: r for r in found if r.data.tags["biohash.role"] == "sweep"}, \
        {r.data.tags["biohash.trial_id"]: r for r in found if r.data.tags["biohash.role"] == "trial"}


def best_runs(client, sweep: str) -> set[str]:
    """Trial ids of the runs the UI filter finds (within one sweep of the shared store)."""
    exp = client.get_experiment_by_name("biohash")
    found = client.search_runs([exp.experiment_id], max_results=1000,
                               filter_string=f"{BEST_FILTER} AND tags.`biohash.sweep` = '{sweep}'")
    return {r.data.tags["biohash.trial_id"] for r in found}


def artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


def test_sync_writes_best_metrics_tables_plots_and_tags(tmp_path, store):
    uri, client = store
    write(tmp_path, "grid")
    report = backfill(str(tmp_path), "grid", uri)
    metrics, best_ids = expected(tmp_path, "grid")
    parents, children = runs(client, "grid")
    parent = parents["sweep"]

    best_metrics = {k: v for k, v in parent.data.metrics.items() if k.startswith("best/")}
    assert best_metrics == pytest.approx(metrics)
    # The fa group's winner is lr 1e-5 (best mean), not lr 1e-4 (best single seed).
    assert metrics["best/CIFAR_10/16/fa/score"] == pytest.approx(0.62 + 0.016)
    assert set(metrics) == {f"best/CIFAR_10/{n}/{r}/score" for n in (16, 32)
                            for r in ("bp", "fa", "usf")}

    top = artifacts(client, parent.info.run_id)
    assert {"best.md", "best.csv", "gap.md", "gap.csv", "vs_published.md", "vs_published.csv",
            "plots"} <= top
    assert {"plots/bits_CIFAR_10.png", "plots/gap_CIFAR_10.png",
            "plots/curves_CIFAR_10.png"} <= artifacts(client, parent.info.run_id, "plots")
    best_md = open(client.download_artifacts(parent.info.run_id, "best.md", str(tmp_path))).read()
    assert all(trial_id in best_md for trial_id in best_ids)
    gap_csv = client.download_artifacts(parent.info.run_id, "gap.csv", str(tmp_path))
    gap_lines = open(gap_csv).read().splitlines()
    # fa vs bp at 16 bits, over the one matched config (lr 1e-5): 0.62 - 0.72, x100.
    assert gap_lines[0] == "db,nbits,mode,gap (x100),n_configs"
    assert "CIFAR_10,16,fa,-10,1" in gap_lines

    assert best_runs(client, "grid") == best_ids == set(report.best)
    assert len(best_ids) == 6 * 2  # six groups, two seeds each

    for trial_id, run in children.items():
        cfg = TrialConfig.from_dict({k: v for k, v in run.data.params.items()})
        assert cfg.trial_id == trial_id
        assert run.info.run_name == (f"CIFAR_10/{cfg.arch}/{cfg.effective_mode}/{cfg.nbits}b/"
                                     f"HashNet/s{cfg.seed}")
        assert run.data.tags[RUN_NAME_TAG] == cfg.run_name


def test_resync_moves_the_best_tag(tmp_path, store):
    uri, client = store
    write(tmp_path, "moved")
    backfill(str(tmp_path), "moved", uri)
    _, before = expected(tmp_path, "moved")
    # New seeds make lr 1e-4 the best fa config: its runs gain the tag, lr 1e-5's lose it.
    write(tmp_path, "moved", {("bio-vgg16", "fa", 1e-4): [0.90, 0.10, 0.95, 0.97]})
    backfill(str(tmp_path), "moved", uri)
    metrics, after = expected(tmp_path, "moved")
    assert before != after
    parents, children = runs(client, "moved")
    assert {k: v for k, v in parents["sweep"].data.metrics.items()
            if k.startswith("best/")} == pytest.approx(metrics)
    assert best_runs(client, "moved") == after
    lost = before - after
    assert lost and all(BEST_TAG not in children[t].data.tags for t in lost)


def test_no_published_counterpart_no_vs_published_table(tmp_path, store):
    uri, client = store
    write(tmp_path, "dch", loss="DCH")
    backfill(str(tmp_path), "dch", uri)
    parents, _ = runs(client, "dch")
    top = artifacts(client, parents["sweep"].info.run_id)
    assert {"best.md", "best.csv", "gap.md"} <= top and "vs_published.md" not in top


def test_sync_renames_runs_made_under_the_old_long_name(tmp_path, store):
    uri, client = store
    cfgs = write(tmp_path, "old")
    logger = SweepLogger(uri, sweep="old", reopen=False)
    old = logger.child(cfgs[0])
    # How runs were created before short names: the run-directory name, no tag.
    client.update_run(old.run_id, name=cfgs[0].run_name)
    client.delete_tag(old.run_id, RUN_NAME_TAG)
    backfill(str(tmp_path), "old", uri)
    run = client.get_run(old.run_id)
    assert run.info.run_name == "CIFAR_10/vgg16/bp/16b/HashNet/s0"
    assert run.data.tags[RUN_NAME_TAG] == cfgs[0].run_name


def test_screenshot_fails_clearly_without_chromium(monkeypatch, tmp_path, capsys):
    from biohash.analysis.screenshot import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no browser on it
    assert main(["--out", str(tmp_path / "x.png"), "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no headless browser found" in err and "apt-get install -y chromium" in err
    assert not (tmp_path / "mlflow.db").exists()  # failed before any sweep or store


def test_best_runs_view_carries_the_filter(store):
    import json
    from urllib.parse import parse_qs, urlsplit

    from mlflow import MlflowClient

    from biohash.analysis.screenshot import VIEW_KEY, best_runs_url, share_best_view

    uri, client = store
    experiment_id = client.create_experiment("screenshot-view")
    share_best_view(uri, experiment_id)
    url = best_runs_url("http://127.0.0.1:5000", experiment_id)
    fragment = urlsplit(urlsplit(url).fragment)
    assert fragment.path == f"/experiments/{experiment_id}/runs"
    assert parse_qs(fragment.query)["viewStateShareKey"] == [VIEW_KEY]
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    assert json.loads(tags[f"mlflow.sharedViewState.{VIEW_KEY}"])["searchFilter"] == BEST_FILTER
