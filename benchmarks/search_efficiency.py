"""How much training a sampled search saves over a full lr x penalty grid (DIGITS, CPU).

    python benchmarks/search_efficiency.py            # 6 x 6 grid per rule, bp + fa, 3 seeds
    python benchmarks/search_efficiency.py --quick    # 4 x 4 grid, bp only, 1 seed (a few minutes)

Per learning rule it runs, through the real sweep machinery on an embedded
local Ray (2 trials at a time, no MLflow):

* the grid: every (lr, penalty) of a log-spaced G x G grid, every epoch;
* TPE + ASHA and random + ASHA over the same ranges (``sample: loguniform``,
  ``search.algorithm: tpe | random``, ``--scheduler asha``), ``--samples``
  draws per rule, for each search seed; the trials' own seed is 0 everywhere.

A config's quality is its final ``val/mAP`` (the whole val fold, as
``biohash eval`` scores it); trials ASHA stopped have none. For each search
and rule, trials are taken in the order they finished; the cost is the
trial-epochs (``epochs_run``, stopped trials included) of every trial
finished up to and including the first whose val mAP is within ``--tol``
(0.01) of the grid's best for that rule. The printed ratio is that cost over
the grid's total trial-epochs for the rule (G x G x ep); a search that never
gets there is marked ``not reached`` and costs its own trial-epochs plus the
whole grid (the grid is what one would run next). Ratios are
averaged over rules, then over search seeds. Target: TPE + ASHA <= 0.35.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

FIXED = {"db": "DIGITS", "arch": "bio-cnn-small", "loss": "DPSH", "nbits": 16, "bs": 64,
         "wd": 0.0, "weights": "none", "val_size": 180, "val_repeats": 2}
LR = (1e-4, 1e-2)
PENALTY = (1e-4, 1.0)


def log_grid(low: float, high: float, n: int) -> list[float]:
    """n log-spaced points from low to high, rounded to 3 significant digits."""
    return [float(f"{low * (high / low) ** (i / (n - 1)):.3g}") for i in range(n)]


def write_space(folder: Path, name: str, raw: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run(space: Path, name: str, args, data_root: str, storage: str, scheduler: str):
    from biohash.orchestrator import SweepOptions, run_sweep
    from biohash.results import load_results

    start = time.monotonic()
    if (Path(storage) / name / "sweep.json").is_file():  # --workdir reused: read, don't rerun
        table = load_results([str(Path(storage) / name)], cache=False)
        print(f"  {name}: {len(table)} trials read from {storage}", flush=True)
        return table.rename(columns={"val/mAP": "quality"})
    summary = run_sweep(SweepOptions(space=str(space), name=name, storage=storage,
                                     data_root=data_root, mlflow_uri="", num_cpus=args.cpus,
                                     max_concurrent=args.cpus, scheduler=scheduler, verbose=0))
    if summary.errors:
        sys.exit(f"{name}: {len(summary.errors)} errored trials: {summary.errors[0]}")
    table = load_results([str(Path(storage) / name)], cache=False)
    print(f"  {name}: {len(table)} trials, {int(table['epochs_run'].sum())} trial-epochs, "
          f"{time.monotonic() - start:.0f} s", flush=True)
    return table.rename(columns={"val/mAP": "quality"})


def cost_to_reach(table, best: float, tol: float) -> tuple[int, bool]:
    """Trial-epochs of the trials finished until one is within tol of best."""
    spent = 0
    for row in table.sort_values("finished_at").itertuples():
        spent += int(row.epochs_run or 0)
        value = row.quality
        if value is not None and not math.isnan(value) and value >= best - tol:
            return spent, True
    return spent, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 x 4 grid, bp only, 1 search seed")
    parser.add_argument("--rules", nargs="+", default=None, help="default: bp fa (quick: bp)")
    parser.add_argument("--grid", type=int, default=None,
                        help="G: a G x G grid (default 6; quick 4)")
    parser.add_argument("--ep", type=int, default=6, help="epochs per trial (default 6)")
    parser.add_argument("--samples", type=int, default=None,
                        help="draws per rule for each search (default G*G/2)")
    parser.add_argument("--seeds", type=int, default=None, help="search seeds (default 3; quick 1)")
    parser.add_argument("--tol", type=float, default=0.01)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--workdir", default=None,
                        help="default: a temporary folder; sweeps already in it are read, "
                             "not rerun")
    args = parser.parse_args()
    rules = args.rules or (["bp"] if args.quick else ["bp", "fa"])
    g = args.grid or (4 if args.quick else 6)
    seeds = range(args.seeds or (1 if args.quick else 3))
    samples = args.samples or g * g // 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="biohash-search-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    storage, data_root = str(work / "sweeps"), str(work / "data")
    fixed = {**FIXED, "ep": args.ep, "pt": args.ep}  # pt = ep: no early stop, only ASHA cuts
    grid_space = write_space(work, "grid", {"fixed": fixed, "grid": {
        "mode": rules, "lr": log_grid(*LR, g), "penalty": log_grid(*PENALTY, g)}})
    print(f"search efficiency on DIGITS: rules {rules}, {g} x {g} grid, ep {args.ep}, "
          f"{samples} draws per rule, search seeds {list(seeds)}, tol {args.tol}; in {work}")
    t0 = time.monotonic()
    grid = run(grid_space, "grid", args, data_root, storage, "fifo")
    best = grid.groupby("mode")["quality"].max().to_dict()
    grid_epochs = grid.groupby("mode")["epochs_run"].sum().to_dict()
    print("  grid best val mAP: " + ", ".join(f"{r} {best[r]:.4f}" for r in rules))
    ratios: dict[str, list[float]] = {"tpe": [], "random": []}
    misses: dict[str, int] = {"tpe": 0, "random": 0}
    for seed in seeds:
        for algorithm in ratios:
            space = write_space(work, f"{algorithm}-{seed}", {
                "fixed": fixed, "grid": {"mode": rules},
                "sample": {"lr": {"loguniform": list(LR)},
                           "penalty": {"loguniform": list(PENALTY)}},
                "search": {"algorithm": algorithm, "num_samples": samples, "seed": seed,
                           "max_concurrent": args.cpus}})
            table = run(space, f"{algorithm}-{seed}", args, data_root, storage, "asha")
            per_rule = []
            for rule in rules:
                spent, reached = cost_to_reach(table[table["mode"] == rule], best[rule], args.tol)
                misses[algorithm] += not reached
                found = table[table["mode"] == rule]["quality"].max()
                per_rule.append((spent + (0 if reached else grid_epochs[rule])) / grid_epochs[rule])
                print(f"    {algorithm} seed {seed} {rule}: {spent} trial-epochs = "
                      f"{per_rule[-1]:.3f} of the grid; best found {found:.4f}"
                      f"{'' if reached else ' (not reached)'}")
            ratios[algorithm].append(statistics.mean(per_rule))
    print(f"\ntrial-epochs until within {args.tol} val mAP of the grid's best, as a ratio of "
          f"the grid's trial-epochs (mean over {len(seeds)} search seeds, {len(rules)} rules):")
    print(f"  grid            1.000  ({int(sum(grid_epochs.values()))} trial-epochs)")
    for algorithm, label in (("tpe", "TPE + ASHA"), ("random", "random + ASHA")):
        values = ratios[algorithm]
        spread = f" (per seed: {', '.join(f'{v:.3f}' for v in values)})" if len(values) > 1 else ""
        missed = f"; not reached {misses[algorithm]}x" if misses[algorithm] else ""
        print(f"  {label:<15} {statistics.mean(values):.3f}{spread}{missed}")
    print(f"target: TPE + ASHA <= 0.35; wall time {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
