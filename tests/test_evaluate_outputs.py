"""Predict/eval output files in h2q's formats (``predict.py``'s ``save_sign_hashes``
and ``hparams.json``, ``eval_map.py``'s ``{fold}-prediction_mAP.json``), checked
on a run directory written by hand: no training needed."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from biohash.config import TrialConfig
from biohash.errors import ConfigError
from biohash.metrics import evaluate_retrieval
from biohash.pipeline.evaluate import evaluate
from biohash.pipeline.predict import FOLDS, h2q_hparams, write_hashes_tsv

H2Q_ORDER = ["mAP", "hparams", "output_path", "datafold", "mAP_at_k=1000", "mAP_at_k=5000"]
H2Q_PREDICT_ARGS = ["experiment_name", "database", "loss", "number_of_bits", "transformations",
                    "architecture", "seed", "batch_size", "mode", "num_workers", "epochs",
                    "patience", "learning_rate", "weight_decay", "optimizer", "datafolds",
                    "no_skip", "penalty", "L2_penalty", "HSWD_penalty", "no_cube", "model",
                    "commit"]


def h2q_tsv(features: np.ndarray) -> str:
    """h2q's ``save_sign_hashes``, verbatim in behaviour."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    for hash_vec in np.sign(features):
        writer.writerow([int(v) for v in hash_vec])
    return buf.getvalue()


def test_hashes_tsv_is_byte_identical_to_h2q(tmp_path) -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((257, 13)).astype(np.float32)
    feats[rng.random(feats.shape) < 0.2] = 0.0  # exact zeros: sign 0
    feats[3] = 0.0
    path = write_hashes_tsv(tmp_path / "query-hashes.tsv", np.sign(feats).astype(np.int8))
    assert path.read_bytes() == h2q_tsv(feats).encode()
    # as h2q's eval_map.py reads it back
    back = np.loadtxt(path, comments="#", delimiter="\t").astype(int)
    assert np.array_equal(back, np.sign(feats).astype(int))


@pytest.mark.parametrize("codes", [np.zeros(5), np.zeros((5, 0)), np.full((2, 3), 2)])
def test_hashes_tsv_rejects_bad_codes(tmp_path, codes) -> None:
    with pytest.raises(ConfigError, match="2-D array of -1/0/1"):
        write_hashes_tsv(tmp_path / "x.tsv", codes)
    assert not (tmp_path / "x.tsv").exists()


def test_hparams_are_h2q_predict_args_then_biohash_fields() -> None:
    cfg = TrialConfig(exp="bioexp", db="CIFAR_10", loss="DCH", nbits=32, arch="bio-vgg16",
                      bs=128, ep=20, no_cube=True)
    hp = h2q_hparams(cfg)
    assert list(hp)[:len(H2Q_PREDICT_ARGS)] == H2Q_PREDICT_ARGS
    assert hp["experiment_name"] == "bioexp" and hp["database"] == "CIFAR_10"
    assert hp["number_of_bits"] == 32 and hp["architecture"] == "bio-vgg16"
    assert hp["learning_rate"] == 1e-5 and hp["batch_size"] == 128 and hp["no_cube"] is True
    assert hp["datafolds"] == list(FOLDS) and hp["model"] == "PenaltyStrategies"
    assert hp["commit"].startswith("biohash ")
    assert {"bio_scope", "weights", "val_size", "val_repeats", "precision"} <= set(hp)
    json.dumps(hp)  # plain JSON types


def _fake_run(root, cfg: TrialConfig, *, nbits: int = 16):
    """A run directory as predict leaves it (features and labels per fold)."""
    run_dir = cfg.run_dir(root / "models")
    run_dir.mkdir(parents=True)
    cfg.save(run_dir)
    rng = np.random.default_rng(1)
    for fold, n in (("database", 300), ("query", 40), ("val", 30)):
        labels = np.eye(10, dtype=np.uint8)[rng.integers(0, 10, n)]
        feats = labels @ rng.standard_normal((10, nbits)) + rng.standard_normal((n, nbits))
        np.save(run_dir / f"{fold}-features.npy", feats.astype(np.float32))
        np.save(run_dir / f"{fold}-labels.npy", labels)
    return run_dir


def test_eval_json_has_h2q_keys_order_and_paths(tmp_path, monkeypatch) -> None:
    cfg = TrialConfig(exp="demo", db="DIGITS", loss="DPSH", nbits=16, arch="bio-cnn-small")
    _fake_run(tmp_path, cfg)
    monkeypatch.chdir(tmp_path)  # h2q was run as `eval_map.py -p models/...` from the repo root
    run_dir = cfg.run_dir("models")
    results, _ = evaluate(run_dir)
    for fold in ("query", "val"):
        text = (run_dir / f"{fold}-prediction_mAP.json").read_text()
        mirror = tmp_path / "eval" / "PenaltyStrategies" / "DIGITS" / "demo" / cfg.run_name
        assert (mirror / f"{fold}-prediction_mAP.json").read_text() == text
        assert text.startswith('{\n    "mAP": ')  # json.dump(..., indent=4)
        doc = json.loads(text)
        assert list(doc)[:6] == H2Q_ORDER
        assert list(doc)[6:] == ["mAP_at_h=0", "mAP_at_h=1", "mAP_at_h=2", "P_at_k=100",
                                 "P_at_k=1000", "score"]
        assert doc["output_path"] == (f"eval/PenaltyStrategies/DIGITS/demo/{cfg.run_name}/"
                                      f"{fold}-prediction_mAP.json")
        assert doc["datafold"] == fold and doc["hparams"] == h2q_hparams(cfg)
        assert {k: v for k, v in doc.items() if k not in H2Q_ORDER[1:4]} == results[fold]
        want = evaluate_retrieval(np.load(run_dir / f"{fold}-features.npy"),
                                  np.load(run_dir / "database-features.npy"),
                                  np.load(run_dir / f"{fold}-labels.npy"),
                                  np.load(run_dir / "database-labels.npy"))
        assert {k: doc[k] for k in want} == want and doc["score"] == want["mAP_at_k=5000"]


def test_eval_json_takes_hparams_from_predict_and_works_outside_models(tmp_path) -> None:
    cfg = TrialConfig(exp="demo", db="DIGITS", loss="DCH", nbits=16, arch="cnn-small")
    models_dir = _fake_run(tmp_path, cfg)
    run_dir = tmp_path / "elsewhere"
    models_dir.rename(run_dir)
    (run_dir / "hparams.json").write_text(json.dumps({"number_of_bits": 16, "loss": "DCH"}))
    evaluate(run_dir, folds=("val",))
    doc = json.loads((run_dir / "val-prediction_mAP.json").read_text())
    assert doc["hparams"] == {"number_of_bits": 16, "loss": "DCH"}
    assert doc["output_path"] == str(run_dir / "val-prediction_mAP.json")
    assert not (run_dir / "query-prediction_mAP.json").exists()
    assert not (tmp_path / "eval").exists()
    (run_dir / "hparams.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable .*hparams.json"):
        evaluate(run_dir, folds=("val",))
