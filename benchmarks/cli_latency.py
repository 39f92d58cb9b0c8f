"""How long the CLI takes to answer, next to ``ray --version`` (issue 11).

``biohash --help`` and ``biohash sweep status NAME`` run on every ``ray exec
cluster.yaml "biohash ..."`` a user types, so they must not import torch, Ray
or MLflow. Target: each <= 0.5 s, or <= 1.5x ``ray --version`` where that is
slower. All commands are timed in interleaved rounds in one run (the machine
is noisy); medians and min/max are printed with the ratio to ``ray --version``.

    python benchmarks/cli_latency.py [--rounds 11] [--storage DIR --name SWEEP]

Without ``--storage``, a one-trial DIGITS sweep is run first in a temporary
directory so that ``sweep status`` reads a real sweep.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _time(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return seconds


def _make_sweep(workdir: str) -> tuple[str, str]:
    space = Path(workdir) / "one.yaml"
    space.write_text(textwrap.dedent("""\
        description: one DIGITS trial for the CLI latency benchmark
        fixed: {db: DIGITS, arch: bio-cnn-small, loss: DCH, nbits: 16, bs: 64, ep: 1,
                lr: 1.0e-3, weights: none, val_size: 180, val_repeats: 1}
        """))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    subprocess.run([str(BIN / "biohash"), "sweep", "run", "--space", str(space), "--name", "latency",
                    "--mlflow-uri", "", "--tune-verbose", "0"], cwd=workdir, env=env, check=True,
                   capture_output=True)
    return str(Path(workdir) / "sweeps"), "latency"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--storage", help="storage holding an existing sweep")
    parser.add_argument("--name", help="that sweep's name")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        storage, name = ((args.storage, args.name) if args.storage and args.name
                         else _make_sweep(workdir))
        commands = {
            "ray --version": [str(BIN / "ray"), "--version"],
            "biohash --help": [str(BIN / "biohash"), "--help"],
            f"biohash sweep status {name}": [str(BIN / "biohash"), "sweep", "status", name,
                                             "--storage", storage],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.rounds):  # interleaved: each round times every command once
            for label, cmd in commands.items():
                times[label].append(_time(cmd, workdir))
    ray_median = statistics.median(times["ray --version"])
    print(f"{'command':<36} {'median s':>9} {'min s':>7} {'max s':>7} {'/ ray':>6}  target")
    for label, values in times.items():
        median = statistics.median(values)
        ratio = median / ray_median
        target = ""
        if label != "ray --version":
            ok = median <= 0.5 or ratio <= 1.5
            target = f"<= 0.5 s or <= 1.5x ray: {'OK' if ok else 'MISS'}"
        print(f"{label:<36} {median:>9.3f} {min(values):>7.3f} {max(values):>7.3f} "
              f"{ratio:>6.2f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
