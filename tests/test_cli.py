"""The seed README's three commands, through ``biohash train|predict|eval``."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from biohash.cli import main

FLAGS = ["-exp", "bioexp", "-db", "DIGITS", "-bs", "64", "-ep", "2", "-arch", "bio-cnn-small",
         "-loss", "DCH", "-nbits", "16", "-mode", "fa", "-lr", "0.001", "-weights", "none",
         "-val_size", "200"]
RUN_NAME = ("-loss=DCH-nbits=16-trf=imagenet-arch=bio-cnn-small-seed=0-bs=64-mode=fa-ep=2-pt=10"
            "-lr=0.001-wd=0.0005-optim=adam-penalty=0.01-L2_penalty=0.0-HSWD_penalty=0.0"
            "-weights=none-val_size=200")


@pytest.fixture
def where(tmp_path, digits_root):
    return ["--data-root", str(digits_root), "--models-dir", str(tmp_path / "models")]


def test_train_predict_eval_like_the_seed_readme(tmp_path, where, capsys):
    assert main(["train", *FLAGS, *where]) == 0
    run_dir = tmp_path / "models" / "PenaltyStrategies" / "DIGITS" / "bioexp" / RUN_NAME
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert main(["predict", *FLAGS, *where, "-tsv"]) == 0
    assert (run_dir / "query-hashes.tsv").read_text().count("\n") == len(
        __import__("numpy").load(run_dir / "query-features.npy"))
    capsys.readouterr()
    assert main(["eval", "-p", str(run_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"query", "val"} and 0 < printed["query"]["mAP"] <= 1
    eval_mirror = tmp_path / "eval" / "PenaltyStrategies" / "DIGITS" / "bioexp" / RUN_NAME
    saved = json.loads((eval_mirror / "query-prediction_mAP.json").read_text())
    assert {k: saved[k] for k in printed["query"]} == printed["query"]
    assert saved["datafold"] == "query" and saved["hparams"]["number_of_bits"] == 16
    # a finished run is skipped unless -no_skip
    assert main(["train", *FLAGS, *where]) == 0
    assert "skipping" in capsys.readouterr().out


@pytest.mark.parametrize("bad, needle", [
    (["-arch", "resnet"], "unknown arch 'resnet'"), (["-loss", "XX"], "unknown loss 'XX'"),
    (["-mode", "zz"], "unknown mode 'zz'"), (["-db", "MNIST"], "unknown dataset 'MNIST'"),
    (["-nbits", "0"], "-nbits 0"), (["-lr", "0"], "-lr 0.0"), (["-bs", "1"], "-bs 1"),
])
def test_bad_flags_exit_2_with_one_line_and_create_nothing(tmp_path, where, capsys, bad, needle):
    assert main(["train", *FLAGS, *bad, *where]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("biohash: error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "models").exists()


def test_wrong_type_and_not_a_run_dir(tmp_path, where, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", *FLAGS, "-nbits", "many", *where])
    assert exc.value.code == 2 and "invalid int value: 'many'" in capsys.readouterr().err
    assert main(["eval", "-p", str(tmp_path)]) == 2
    assert "not a biohash run directory" in capsys.readouterr().err


def test_console_script_runs_in_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "biohash.cli", "eval", "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("biohash: error: not a biohash run")
