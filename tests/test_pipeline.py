"""One trial end to end on the embedded DIGITS set: train -> predict -> evaluate."""
from __future__ import annotations

import json

import numpy as np
import pytest

from biohash.contract import FINAL_METRICS, FinalReport
from biohash.metrics import REPORTED_METRICS
from biohash.pipeline import Runtime, run_trial
from biohash.pipeline.run import read_status
from biohash.pipeline.train import train

OLD_KEYS = {"mAP", "mAP_at_k=1000", "mAP_at_k=5000", "mAP_at_h=0", "mAP_at_h=1", "mAP_at_h=2",
            "score"}


def test_full_trial_writes_the_old_files_and_reports_the_contract(tmp_path, digits_root, tiny_cfg):
    run_dir = tmp_path / "run"
    epochs = []
    report = run_trial(tiny_cfg, run_dir, runtime=Runtime(data_root=str(digits_root)),
                       report=lambda m, ckpt: epochs.append((m, sorted(p.name for p in ckpt.iterdir()))))
    final = report.to_dict()  # the wire form, as Tune and final.json carry it
    assert [m["epoch"] for m, _ in epochs] == [1, 2]
    assert all("latest.pt" in files and "best.pt" in files for _, files in epochs)
    assert any(k.startswith("align/") for k in epochs[0][0]), "bio models report alignment"
    assert final["status"] == "finished" and final["epochs_run"] == 2
    for fold in ("query", "val"):
        saved = json.loads((run_dir / f"{fold}-prediction_mAP.json").read_text())
        assert OLD_KEYS <= set(saved)
        assert final[f"{fold}/mAP"] == pytest.approx(saved["mAP"])
        assert {f"{fold}/{m}" for m in REPORTED_METRICS} <= set(final)
    assert final["score"] == final["query/mAP_at_5000"] > 0.2  # learns something in 2 epochs
    feats = np.load(run_dir / "database-features.npy")
    codes = np.load(run_dir / "database-codes.npy")
    assert feats.dtype == np.float32 and feats.shape[1] == 16
    assert np.array_equal(codes, np.sign(feats).astype(np.int8))
    assert read_status(run_dir)["train"] == "finished" and read_status(run_dir)["eval"] == "done"
    assert len(json.loads(final["history"])) == 2
    assert final["val_mAP"] == final["val/mAP"] == report.val_mAP and "finished_at" not in final
    assert FinalReport.from_dict(final) == report


class _Crash(Exception):
    pass


def test_resume_after_a_crash_ends_with_identical_metrics(tmp_path, digits_root, tiny_cfg):
    cfg = tiny_cfg.replace(ep=3)
    runtime = Runtime(data_root=str(digits_root))
    whole = train(cfg, tmp_path / "a", runtime=runtime)

    def crash_after_first(metrics, _ckpt):
        if metrics["epoch"] == 1:
            raise _Crash()

    with pytest.raises(_Crash):
        train(cfg, tmp_path / "b", runtime=runtime, report=crash_after_first)
    resumed = train(cfg, tmp_path / "b", runtime=runtime, resume=tmp_path / "b" / "checkpoints")
    strip = lambda h: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    assert resumed.best_val == whole.best_val and resumed.status == whole.status


def test_divergence_stops_with_status_diverged_and_zero_map(tmp_path, digits_root, tiny_cfg):
    cfg = tiny_cfg.replace(optim="sgd", lr=1e30, arch="cnn-small", ep=3)
    final = run_trial(cfg, tmp_path / "run", runtime=Runtime(data_root=str(digits_root)))
    assert final.status == "diverged"
    assert final.history[-1]["val_mAP"] == 0.0 and len(final.history) < 3
    wire = final.to_dict()  # not evaluated: every final metric and the score are 0
    assert all(wire[k] == 0.0 for k in (*FINAL_METRICS, "score"))


def test_early_stopping_after_patience(tmp_path, digits_root, tiny_cfg):
    cfg = tiny_cfg.replace(optim="sgd", lr=1e-12, ep=6, pt=1, arch="cnn-small")
    result = train(cfg, tmp_path / "run", runtime=Runtime(data_root=str(digits_root)))
    assert result.status == "early_stopped" and result.epochs_run < 6
