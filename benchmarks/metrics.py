"""Benchmark: biohash.metrics vs h2q's per-query loop and vs the machine's sort speed.

Usage: .venv/bin/python benchmarks/metrics.py [--quick] [--rounds N] [--breakdown]

Two problems, 64-bit codes, features correlated with the labels:

* NUS-like: database 100,000, 2,000 multi-label queries (21 labels); headline mAP@5000;
* ImageNet-100-like: database 128,000, 5,000 one-hot queries (100 classes); mAP@1000.

Two workloads on each:

(a) the headline mAP@k alone, ``retrieval_map(k=...)``: ranking prefixes
    selected in O(N) and sorted (no full sort);
(b) one trial's evaluation, ``evaluate_retrieval()``: mAP, mAP@1000/5000,
    mAP@h0-2, P@100/1000 (the full-list mAP needs the full sort).

Against:

* reference: h2q's ``mAP_at_many`` loop (float64 keys, one full argsort per
  query) computing what the workload asks, timed on a subset of queries and
  scaled linearly (values compared on that subset, must agree to 1e-9);
* limit: the machine's speed for the same amount of selection/sorting, one
  ``np.partition`` (a, at the same k) or ``np.sort`` (b) pass over as many
  int64 keys (queries x database), timed on a block of rows split over the
  same number of threads as biohash uses, and scaled.

Each round times biohash, the reference and the limit back to back, so load
from other processes hits all three alike; the table shows medians over the
rounds. Targets: (a) >= 20x faster than the reference; (b) within 2x of the
limit. Then the peak memory NumPy allocates at ImageNet scale (tracemalloc,
in a fresh subprocess).

``--breakdown`` instead times the stages of workload (b) per query on one
thread (BLAS included), in units of the limit (np.sort of as many random
int64 keys), rounds interleaved: what the full-list path's time is made of.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import median
from typing import Callable

import numpy as np

from biohash.metrics import evaluate_retrieval, retrieval_map
from biohash.metrics.keys import KS, PRECISION_KS, RADII
from biohash.metrics.retrieval import _MAX_WORKERS

TARGET_SPEEDUP, TARGET_LIMIT_RATIO = 20.0, 2.0


@dataclass(frozen=True)
class Problem:
    name: str
    n_db: int
    n_q: int
    n_labels: int
    multi: bool
    k: int        # the headline cutoff
    n_ref: int    # queries the reference is timed on (per round)


def make_data(n_db: int, n_q: int, nbits: int, n_labels: int, multi: bool, seed: int = 0):
    """Features correlated with labels (so rankings are non-trivial)."""
    rng = np.random.default_rng(seed)
    n = n_db + n_q
    if multi:
        labels = (rng.random((n, n_labels)) < 0.08).astype(np.float32)
        labels[np.arange(n), rng.integers(0, n_labels, n)] = 1  # >= 1 label each
    else:
        labels = np.eye(n_labels, dtype=np.float32)[rng.integers(0, n_labels, n)]
    proto = 2.0 * rng.standard_normal((n_labels, nbits)).astype(np.float32)
    feats = labels @ proto + 1.0 * rng.standard_normal((n, nbits)).astype(np.float32)
    return feats[n_db:], feats[:n_db], labels[n_db:], labels[:n_db]


# ----------------------------------------------------------------- h2q's per-query loop
def reference(qf, df, ql, dl, *, full: bool, ks, radii, pks) -> dict[str, float]:
    """h2q's ``mAP_at_many`` (``src/utils/eval_utils.py``) plus P@k: per query,
    hamming ``(nbits - q·d) / 2``, key ``10·hamming + Σ(q - d)²``, one argsort."""
    def norm(x):
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def ap(rel, cut):
        pos = np.flatnonzero(rel[:cut]) + 1
        return float(np.mean(np.arange(1, len(pos) + 1) / pos)) if len(pos) else 0.0

    qn, dn = norm(qf), norm(df)
    qc, dc = np.sign(qn).astype(int), np.sign(dn).astype(int)
    out: dict[str, float] = {}
    for i in range(len(qn)):
        rel = dl.astype(np.float64) @ ql[i].astype(np.float64) > 0
        ham = 0.5 * (qc.shape[1] - dc @ qc[i])
        order = np.argsort(10 * ham + np.sum((dn - qn[i]) ** 2, axis=1))
        rel, ham = rel[order], ham[order]
        vals = {"mAP": ap(rel, len(rel))} if full else {}
        vals.update({f"mAP_at_k={k}": ap(rel, k) for k in ks})
        vals.update({f"mAP_at_h={h}": ap(rel, int(np.sum(ham <= h))) for h in radii})
        vals.update({f"P_at_k={k}": rel[:k].sum() / min(k, len(rel)) for k in pks})
        for key, v in vals.items():
            out[key] = out.get(key, 0.0) + v / len(qn)
    return out


# ----------------------------------------------------------------- the machine's limit
def limit_seconds(n_q: int, n_db: int, kth: int | None, block_rows: int) -> float:
    """Seconds for one np.partition (at ``kth``) or np.sort (``kth`` None) pass over
    ``n_q x n_db`` int64 keys, on the threads biohash would use (timed on
    ``block_rows`` rows, scaled)."""
    workers = max(1, min(os.cpu_count() or 1, _MAX_WORKERS))
    rows = max(workers, block_rows - block_rows % workers)
    keys = np.random.default_rng(1).integers(0, 2**62, size=(rows, n_db))
    parts = np.array_split(keys, workers)

    def one(part: np.ndarray) -> None:
        if kth is None:
            part.sort(axis=1)
        else:
            part.partition(kth, axis=1)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, parts))
    return (time.perf_counter() - t0) * n_q / rows


# ----------------------------------------------------------------- one workload
@dataclass
class Row:
    problem: str
    workload: str
    fast: list[float]
    ref: list[float]
    limit: list[float]
    err: float

    def summary(self) -> str:
        fast, ref, lim = median(self.fast), median(self.ref), median(self.limit)
        return (f"{fast:.2f} s, {ref / fast:.1f}x faster than the reference, "
                f"{fast / lim:.2f}x the limit")


def workload(pb: Problem, data, label: str, run_fast: Callable, ref_kw: dict,
             kth: int | None, rounds: int, block_rows: int) -> Row:
    qf, df, ql, dl = data
    fast_t, ref_t, lim_t, fast_vals = [], [], [], None
    order = np.random.default_rng(2).permutation(pb.n_q)
    subsets = np.array_split(order[:pb.n_ref * rounds], rounds)
    ref_vals: list[tuple[np.ndarray, dict]] = []
    for sub in subsets:
        t0 = time.perf_counter()
        fast_vals = run_fast(qf, df, ql, dl)
        fast_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref_vals.append((sub, reference(qf[sub], df, ql[sub], dl, **ref_kw)))
        ref_t.append((time.perf_counter() - t0) * pb.n_q / len(sub))
        lim_t.append(limit_seconds(pb.n_q, pb.n_db, kth, block_rows))
    assert fast_vals is not None
    err = 0.0  # values on the reference's queries, not timed
    for sub, want in ref_vals:
        got = run_fast(qf[sub], df, ql[sub], dl)
        err = max(err, max(abs(got[k] - want[k]) for k in want))
    row = Row(pb.name, label, fast_t, ref_t, lim_t, err)
    print(f"  {pb.name} {label}: {row.summary()}; "
          f"{json.dumps({k: round(v, 4) for k, v in fast_vals.items()})}", flush=True)
    return row


def speed(problems: list[Problem], rounds: int, block_rows: int) -> list[Row]:
    rows = []
    for pb in problems:
        data = qf, df, ql, dl = make_data(pb.n_db, pb.n_q, 64, pb.n_labels, pb.multi)
        # warm-up: allocator, BLAS threads, loading both paths' compiled kernels
        evaluate_retrieval(qf[:8], df, ql[:8], dl)
        retrieval_map(qf[:8], df, ql[:8], dl, k=pb.k)
        rows.append(workload(
            pb, data, f"(a) mAP@{pb.k}",
            lambda qf, df, ql, dl: {f"mAP_at_k={pb.k}": retrieval_map(qf, df, ql, dl, k=pb.k)},
            dict(full=False, ks=(pb.k,), radii=(), pks=()), pb.k, rounds, block_rows))
        rows.append(workload(
            pb, data, "(b) full set", evaluate_retrieval,
            dict(full=True, ks=KS, radii=RADII, pks=PRECISION_KS), None, rounds, block_rows))
    return rows


def print_table(rows: list[Row], rounds: int) -> None:
    print(f"\nmedians of {rounds} interleaved rounds; load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    head = (f"{'problem':<28} {'workload':<14} {'biohash s':>9} {'reference s':>11} "
            f"{'x faster':>8} "
            f"{'limit s':>8} {'/ limit':>7} {'max |diff|':>10}  target")
    print(head)
    print("-" * len(head))
    for r in rows:
        fast, ref, lim = median(r.fast), median(r.ref), median(r.limit)
        is_a = r.workload.startswith("(a)")
        ok = ref / fast >= TARGET_SPEEDUP if is_a else fast / lim <= TARGET_LIMIT_RATIO
        target = (f">= {TARGET_SPEEDUP:.0f}x ref" if is_a
                  else f"<= {TARGET_LIMIT_RATIO:.0f}x limit")
        exact = "OK" if r.err <= 1e-9 else "FAIL"
        print(f"{r.problem:<28} {r.workload:<14} {fast:9.2f} {ref:11.1f} {ref / fast:8.1f} "
              f"{lim:8.2f} {fast / lim:7.2f} {r.err:10.1e}  {target}: {'OK' if ok else 'MISS'}"
              f" (values {exact})")
    print("limit: np.partition at k (a) / np.sort (b) of queries x database int64 keys, "
          "same threads")


# ----------------------------------------------------------------- stages of (b)
def _single_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (scikit-learn's dependency): BLAS keeps its threads
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def breakdown(problems: list[Problem], rows: int, rounds: int) -> None:
    """Median per-query ms of each stage of the full-list path on one thread.

    Stages: the distance GEMM; ``rank_rows`` (the GEMM, then per row one
    compiled pass for keys, relevance and words, the sort, the run repair);
    ``np.sort`` alone of the same 32-bit words (shuffled back); ``_chunk_full``
    (all that plus the radius cutoffs and the AP pass); the limit.
    """
    from biohash.metrics import _ranking, retrieval

    print(f"\nstages of (b) on one thread, {rows} queries per chunk, medians of {rounds} "
          f"interleaved rounds; load average {os.getloadavg()[0]:.1f}")
    for pb in problems:
        qf, df, ql, dl = make_data(pb.n_db, rows, 64, pb.n_labels, pb.multi)
        qf, df, ql, dl = retrieval._check_inputs(qf, df, ql, dl)
        p = _ranking.prepare(retrieval.normalize_features(qf), retrieval.normalize_features(df),
                             ql, dl, indexed=False)  # as evaluate_retrieval() for the full list
        ws = _ranking.Workspace.of(p, rows)
        fixed = np.array([p.n_db, *sorted(set(KS) | set(PRECISION_KS))], dtype=np.int64)
        rng = np.random.default_rng(3)
        words = np.stack([w.copy() for w in _ranking.rank_rows(p, ws, 0, rows)])
        shuffled = rng.permuted(words, axis=1)
        keys = rng.integers(0, 2**62, size=(rows, pb.n_db))
        stages: dict[str, Callable[[], object]] = {
            "distance GEMM (Hamming by popcount)": lambda: _ranking._chunk_gemms(
                p, ws, 0, rows, hamming=False),
            "rank_rows (GEMM, words, sort, repair)": lambda: [
                None for _ in _ranking.rank_rows(p, ws, 0, rows)],
            "np.sort of the packed 32-bit words alone": lambda: shuffled.copy().sort(axis=1),
            "_chunk_full (all of (b) per chunk)": lambda: retrieval._chunk_full(
                p, ws, 0, rows, fixed, RADII),
            "limit: np.sort of random int64 keys": lambda: keys.copy().sort(axis=1),
        }
        times: dict[str, list[float]] = {name: [] for name in stages}
        with _single_thread():
            for _ in range(rounds):
                for name, stage in stages.items():
                    t0 = time.perf_counter()
                    stage()
                    times[name].append((time.perf_counter() - t0) * 1e3 / rows)
        ms = {name: median(t) for name, t in times.items()}
        limit = ms["limit: np.sort of random int64 keys"]
        print(f"  {pb.name}")
        for name, value in ms.items():
            print(f"    {name:<40} {value:7.3f} ms/query {value / limit:6.2f} x limit")


# ----------------------------------------------------------------- memory
def _memory_child(n_db: int, n_q: int) -> None:
    """Peak of the memory NumPy allocates during evaluate_retrieval (NumPy
    reports its buffers to tracemalloc), beyond the inputs."""
    qf, df, ql, dl = make_data(n_db, n_q, 64, 100, multi=False)
    tracemalloc.start()
    t0 = time.perf_counter()
    evaluate_retrieval(qf, df, ql, dl)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"extra_mb": peak / 2**20, "seconds": seconds}))


def memory(n_db: int, n_q: int) -> None:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n_db), str(n_q)],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"\nmemory: ImageNet scale, database {n_db:,} x 64 bits, {n_q:,} queries, 100 classes")
    print(f"  peak NumPy memory during evaluate_retrieval: {res['extra_mb']:.0f} MB "
          f"(limit 2048 MB: {'OK' if res['extra_mb'] <= 2048 else 'FAIL'}); "
          f"time {res['seconds']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller problems, 2 rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--breakdown", action="store_true",
                        help="time the stages of (b) per query on one thread instead")
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(*args.memory_child)
        return 0
    scale = 10 if args.quick else 1
    rounds = args.rounds or (2 if args.quick else 3)
    problems = [Problem(f"{name} {n_q // scale:,} x {n_db // scale:,}", n_db // scale,
                        n_q // scale, n_labels, multi, k // scale, 100 // scale)
                for name, n_db, n_q, n_labels, multi, k in (
                    ("NUS-like", 100_000, 2_000, 21, True, 5000),
                    ("ImageNet-like", 128_000, 5_000, 100, False, 1000))]
    if args.breakdown:
        breakdown(problems, rows=64 if not args.quick else 16, rounds=rounds)
        return 0
    print(f"benchmarks/metrics.py{' --quick' if args.quick else ''}: 64-bit codes, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    rows = speed(problems, rounds, block_rows=200 if not args.quick else 40)
    print_table(rows, rounds)
    memory(128_000 // scale, 5_000 // scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
