"""The CLI answers without the heavy libraries it does not need.

``biohash --help`` and the storage listings run on every ``ray exec cluster.yaml
"biohash ..."``; importing torch (and Ray, MLflow) to print them cost ~5 s. Each
command runs in a fresh interpreter and reports which of them it imported.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow")

_PROBE = """
import contextlib, io, json, sys
from biohash.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _imports(args: list[str], cwd) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["--help"], ["sweep", "--help"], ["sweep", "run", "--help"], ["train", "--help"],
    ["sweep", "status", "nosuch"], ["sweep", "list"], ["data", "list"],
    # validates every name against the registries (biohash.catalog) and plans
    ["sweep", "plan", "--space", "demo"], ["sweep", "plan", "--space", "paper-grid"],
    ["results", "best", "nosuch"], ["results", "table", "nosuch"],
    ["train", "-nbits", "abc"],
], ids=" ".join)
def test_cli_does_not_import_torch_ray_or_mlflow(args, tmp_path):
    (tmp_path / "sweeps").mkdir()
    result = _imports(args, tmp_path)
    assert result["heavy"] == [], f"biohash {' '.join(args)} imported {result['heavy']}"


def test_sweep_plan_validates_and_plans_torch_free(tmp_path):
    # The plan itself ran (exit 0: DIGITS is built on first use), not an early error.
    assert _imports(["sweep", "plan", "--space", "demo"], tmp_path) == {"code": 0, "heavy": []}
