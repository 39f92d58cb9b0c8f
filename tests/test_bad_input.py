"""Bad input through the real CLI: exit 2, one line naming the value, nothing created.

Each case runs ``biohash.cli.main`` in a fresh working directory and checks
that stderr is at most the error line and the ``--help`` hint, that the
line names the bad value, and that the directory is still empty afterwards.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from biohash.cli import build_parser, main
from biohash.cli_types import nonnegative_float, positive_float
from biohash.config import MAX_NBITS

TRIAL = ["-db", "DIGITS", "-arch", "bio-cnn-small", "-loss", "DPSH", "-nbits", "16",
         "-weights", "none"]


def _run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run the CLI in an empty folder: (exit code, stderr lines); asserts nothing was created."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("BIOHASH_DATA_ROOT", raising=False)
    monkeypatch.delenv("BIOHASH_STORAGE", raising=False)
    before = sorted(work.rglob("*"))

    def run(*args: str) -> list[str]:
        code = _run(list(args))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (code, err)
        assert 1 <= len(err) <= 2 and err[0].startswith("biohash"), err
        assert sorted(work.rglob("*")) == before, "a bad input created files"
        return err

    run.work = work  # type: ignore[attr-defined]
    return run


# ------------------------------------------------------------------ flag types
@pytest.mark.parametrize("args, needle", [
    (["train", *TRIAL, "-nbits", "abc"], "argument -nbits/--number_of_bits: invalid int value: 'abc'"),
    (["predict", *TRIAL, "-bs", "x"], "argument -bs/--batch_size: invalid int value: 'x'"),
    (["eval", "--folds"], "argument --folds: expected at least one argument"),
    (["train", "--nosuch"], "unrecognized arguments: --nosuch"),
    (["sweep", "plan"], "the following arguments are required: --space"),
])
def test_a_flag_argparse_rejects_is_one_line_and_a_hint(cli, args, needle):
    err = cli(*args)
    assert needle in err[0] and "usage:" not in "\n".join(err)
    assert err[1].endswith("--help' for the flags and their values")


@pytest.mark.parametrize("kind, good, bad", [
    (nonnegative_float, ["0", "300", "1e3"], ["nan", "inf", "-inf", "-1", "x"]),
    (positive_float, ["0.5", "4"], ["nan", "inf", "0", "-2"]),
])
def test_number_types_refuse_nan_and_inf(kind, good, bad):
    assert [kind(v) for v in good] == [float(v) for v in good]
    for value in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=repr(value)):
            kind(value)


def _flag_type(path: list[str], flag: str):
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return next(a for a in parser._actions if flag in a.option_strings).type


@pytest.mark.parametrize("flag, value, kind", [
    ("--checkpoint-interval", "nan", nonnegative_float),
    ("--checkpoint-interval", "inf", nonnegative_float),
    ("--cpus-per-trial", "nan", positive_float),
    ("--gpus-per-trial", "nan", nonnegative_float),
])
def test_sweep_run_refuses_nan_and_inf_before_anything_starts(cli, flag, value, kind):
    # Checked first: with a plain float type this input would start a sweep.
    assert _flag_type(["sweep", "run"], flag) is kind
    err = cli("sweep", "run", "--space", "demo", "--storage", "sweeps", flag, value)
    assert f"argument {flag}: '{value}'" in err[0]


# ---------------------------------------------------------------------- sizes
def test_nbits_past_what_the_metrics_rank_exactly_is_refused(cli):
    err = cli("train", *TRIAL, "-nbits", str(MAX_NBITS + 1), "--data-root", "data")
    assert f"bad -nbits {MAX_NBITS + 1}; allowed: an integer in 1..1,677,721" in err[0]


def test_nbits_past_the_code_table_is_refused_for_hyp2(cli):
    err = cli("train", *TRIAL, "-loss", "HyP2", "-nbits", "300", "--data-root", "data")
    assert "bad -nbits 300 for -loss HyP2; allowed: 1..256" in err[0]


_HUGE = """\
fixed: {db: DIGITS, arch: bio-cnn-small, weights: none, exp: huge}
grid:
  lr: [0.1, 0.01, 0.001, 0.0001, 0.00001, 0.000001, 0.0000001, 0.00000001, 0.3, 0.03]
  penalty: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
  nbits: [8, 16, 24, 32, 40, 48, 56, 64, 72, 80]
  bs: [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
  mode: [bp, fa, usf, frsf, brsf, dfa]
  ep: [1, 2]
"""


@pytest.mark.parametrize("verb", [["sweep", "plan"], ["sweep", "run", "--storage", "sweeps"]])
def test_a_grid_past_the_limit_is_refused_by_plan_and_run_alike(cli, tmp_path, verb):
    space = tmp_path / "huge.yaml"
    space.write_text(_HUGE)
    err = cli(*verb, "--space", str(space))
    assert "past the limit of 100,000 trials per space" in err[0] and "up to 120,000" in err[0]


# ---------------------------------------------------------------------- names
@pytest.mark.parametrize("args, needle", [
    (["train", *TRIAL, "--group", "../x"], "bad --group '../x'"),
    (["train", *TRIAL, "-exp", "a\x1b[2Jb"], "bad -exp 'a\\x1b[2Jb'"),
    (["predict", *TRIAL, "-exp", "..", ], "bad -exp '..'"),
    (["sweep", "status", "../x", "--storage", "sweeps"], "'../x'"),
    (["sweep", "run", "--space", "demo", "--name", "../x", "--resume", "--storage", "sweeps"],
     "'../x'"),
])
def test_user_names_go_through_one_name_check(cli, args, needle):
    err = cli(*args)
    assert needle in err[0] and "letters, digits, '.', '_', '-'" in err[0]


# ----------------------------------------------------------------------- data
@pytest.mark.parametrize("verb", ["train", "predict"])
def test_a_missing_dataset_is_reported_before_the_run_directory(cli, verb):
    err = cli(verb, *TRIAL, "-db", "CIFAR_10", "--data-root", "nodata")
    assert "dataset CIFAR_10 is not processed under nodata" in err[0]


def test_eval_of_a_folder_that_is_not_a_run(cli):
    err = cli("eval", "-p", "nowhere")
    assert "not a biohash run directory: 'nowhere'" in err[0]


def test_data_process_into_a_file_root(cli, tmp_path):
    root = tmp_path / "afile"
    root.write_text("not a folder")
    err = cli("data", "process", "DIGITS", "--root", str(root))
    assert f"data root {str(root)!r} is a file, not a folder" in err[0]


_GOOD_LINE = "images/a.png,1 0 0 0 0 0 0 0 0 0\n"


@pytest.mark.parametrize("query, needle", [
    ("a.png,0 2 0 0 0 0 0 0 0 0\n", "query_metadata.txt:1: bad metadata line (value '2')"),
    ("a.png,1 0 0\n", "query_metadata.txt:1: 3 label columns, but DIGITS has 10"),
    ("a.png,\n", "query_metadata.txt:1: bad metadata line (value 'a.png,')"),
    (b"\xff\xfe\x00", "query_metadata.txt: unreadable metadata file"),
    ("\n", "query_metadata.txt: no items"),
])
def test_malformed_h2q_label_files_are_one_line_data_errors(cli, tmp_path, query, needle):
    from PIL import Image

    src = tmp_path / "old"
    (src / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "images" / "a.png")
    for fold in ("train", "val", "database"):
        (src / f"{fold}_metadata.txt").write_text(_GOOD_LINE)
    path = src / "query_metadata.txt"
    path.write_bytes(query) if isinstance(query, bytes) else path.write_text(query)
    err = cli("data", "import-h2q", str(src), "--name", "DIGITS", "--root",
              str(Path("data").absolute()))
    assert needle in err[0]
