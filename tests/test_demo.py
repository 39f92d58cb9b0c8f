"""``biohash demo`` end to end (with a 2-trial space so CI stays fast)."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from biohash.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_a_sweep_and_prints_where_everything_is(tmp_path, monkeypatch, capsys, ray_local):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BIOHASH_STORAGE", raising=False)
    monkeypatch.delenv("BIOHASH_DATA_ROOT", raising=False)
    space = tmp_path / "mini.yaml"
    space.write_text(textwrap.dedent("""\
        description: two-trial demo
        fixed: {db: DIGITS, arch: bio-cnn-small, loss: DPSH, nbits: 16, bs: 64, ep: 2, lr: 1.0e-3,
                weights: none, val_size: 180, val_repeats: 2}
        grid: {mode: [bp, usf]}
        """))
    assert main(["demo", "--space", str(space), "--storage", "sweeps"]) == 0
    out = capsys.readouterr().out
    assert "Best config per code length and learning rule" in out and "| usf |" in out
    assert "2 trials (2 done)" in out and "mlflow.db" in out
    sweep = next((tmp_path / "sweeps").iterdir())
    pngs = list((sweep / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # Where everything is: absolute addresses that exist after the command.
    parquet = re.search(r"Parquet results : (\S+)/results/", out).group(1)
    plots = re.search(r"plots +: (\d+) PNG files in (\S+)/\n", out)
    mlflow_db = re.search(r"MLflow store +: sqlite:///(\S+)", out).group(1)
    assert Path(parquet) == sweep and (sweep / "results" / "trials").is_dir()
    assert Path(plots.group(2)) == sweep / "plots" and int(plots.group(1)) == len(pngs)
    assert Path(mlflow_db) == tmp_path / "mlflow.db" and Path(mlflow_db).is_file()
    assert f"biohash results table {sweep.name})" in out  # default storage: no --storage
    assert len(list(sweep.glob("*/final.json"))) == 2
    assert (tmp_path / "data" / "processed" / "DIGITS" / "manifest.json").is_file()
    assert not list(sweep.glob("*/data")), "trials must share the driver's data root"
    # A demo model learns: DPSH on a from-scratch CNN once collapsed to 1-3 codes for all
    # 537 database items (dead last ReLU, see biohash.models.archs.SmallCNN).
    codes = sorted(sweep.glob("*/**/database-codes.npy"))
    assert len(codes) == 2
    for path in codes:
        distinct = len(np.unique(np.load(path), axis=0))
        assert distinct > 20, f"{path.parent.name}: {distinct} distinct database codes"
