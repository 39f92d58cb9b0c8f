"""``biohash demo`` end to end (with a 2-trial space so CI stays fast)."""
from __future__ import annotations

import textwrap

import pytest

from biohash.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_a_sweep_and_prints_where_everything_is(tmp_path, monkeypatch, capsys, ray_local):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "mini.yaml"
    space.write_text(textwrap.dedent("""\
        description: two-trial demo
        fixed: {db: DIGITS, arch: bio-cnn-small, loss: DCH, nbits: 16, bs: 64, ep: 2, lr: 1.0e-3,
                weights: none, val_size: 180, val_repeats: 2}
        grid: {mode: [bp, usf]}
        """))
    assert main(["demo", "--space", str(space), "--storage", "sweeps"]) == 0
    out = capsys.readouterr().out
    assert "Best config per code length and learning rule" in out and "| usf |" in out
    assert "2 trials (2 finished)" in out and "mlflow.db" in out
    sweep = next((tmp_path / "sweeps").iterdir())
    pngs = list((sweep / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (tmp_path / "data" / "processed" / "DIGITS" / "manifest.json").is_file()
    assert not list(sweep.glob("*/data")), "trials must share the driver's data root"
