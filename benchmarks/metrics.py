"""Benchmark: biohash.metrics.evaluate_retrieval vs a per-query reference.

Usage: .venv/bin/python benchmarks/metrics.py [--quick]

1. Speed and exactness: the full metric set (mAP, mAP@1000/5000, mAP@h0-2,
   P@100/1000) on a NUS-like problem (100,000 x 64-bit database, 2,000
   multi-label queries, 21 labels) against h2q's per-query loop (float64
   keys, full stable argsort per query). The reference is timed on a subset of
   queries and extrapolated linearly to all queries; both are compared on
   that subset (must agree to 1e-9).
2. Peak memory at ImageNet scale (128,000 x 5,000 queries, 64 bits, 100
   classes), measured in a fresh subprocess as ru_maxrss minus the baseline
   after the inputs exist.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from biohash.metrics import evaluate_retrieval

KS, RADII, PKS = (1000, 5000), (0, 1, 2), (100, 1000)


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


def reference(qf, df, ql, dl) -> dict[str, float]:
    """h2q-style loop: one float64 key and one full stable argsort per query."""
    def norm(x):
        x = x.astype(np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def ap(rel, cut):
        pos = np.flatnonzero(rel[:cut]) + 1
        return float(np.mean(np.arange(1, len(pos) + 1) / pos)) if len(pos) else 0.0

    qn, dn = norm(qf), norm(df)
    qc, dc = np.sign(qn), np.sign(dn)
    out: dict[str, list[float]] = {}
    for i in range(len(qn)):
        ham = np.count_nonzero(dc != qc[i], axis=1)
        order = np.argsort(10 * ham + np.sum((dn - qn[i]) ** 2, axis=1), kind="stable")
        rel = (dl.astype(np.float64) @ ql[i].astype(np.float64) > 0)[order]
        ham = ham[order]
        vals = {"mAP": ap(rel, len(rel))}
        vals.update({f"mAP_at_k={k}": ap(rel, k) for k in KS})
        vals.update({f"mAP_at_h={h}": ap(rel, int(np.sum(ham <= h))) for h in RADII})
        vals.update({f"P_at_k={k}": rel[:k].sum() / min(k, len(rel)) for k in PKS})
        for key, v in vals.items():
            out.setdefault(key, []).append(v)
    return {key: float(np.mean(v)) for key, v in out.items()}


def speed(n_db: int, n_q: int, n_ref: int, rounds: int = 4) -> None:
    """Time the full metric set against the reference (timed on n_ref queries).

    The two are timed in alternating rounds (each round: n_q/rounds queries
    through evaluate_retrieval, then n_ref/rounds queries through the
    reference), so load from other processes hits both alike. Each
    evaluate_retrieval call pays its own set-up (normalisation, dedup).
    """
    qf, df, ql, dl = make_data(n_db, n_q, 64, 21, multi=True)
    evaluate_retrieval(qf[:8], df, ql[:8], dl)  # warm-up (allocator, BLAS threads)
    load_before = os.getloadavg()[0]
    t_fast = t_ref_sub = 0.0
    fast_parts, ref_rows = [], []
    for q in np.array_split(np.arange(n_q), rounds):
        t0 = time.perf_counter()
        fast_parts.append((len(q), evaluate_retrieval(qf[q], df, ql[q], dl, ks=KS, radii=RADII,
                                                      precision_ks=PKS)))
        t_fast += time.perf_counter() - t0
        r = q[: n_ref // rounds]
        ref_rows.extend(r)
        t0 = time.perf_counter()
        reference(qf[r], df, ql[r], dl)
        t_ref_sub += time.perf_counter() - t0
    fast = {k: sum(n * res[k] for n, res in fast_parts) / n_q for k in fast_parts[0][1]}
    ref_rows = np.array(ref_rows)
    t_ref = t_ref_sub * n_q / len(ref_rows)
    ref = reference(qf[ref_rows], df, ql[ref_rows], dl)
    sub = evaluate_retrieval(qf[ref_rows], df, ql[ref_rows], dl, ks=KS, radii=RADII,
                             precision_ks=PKS)
    err = max(abs(sub[k] - ref[k]) for k in ref)
    print(f"speed: database {n_db:,} x 64 bits, {n_q:,} queries, 21 labels (multi-label); "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  evaluate_retrieval (all {len(fast)} metrics, {n_q} queries in {rounds} calls): "
          f"{t_fast:8.2f} s")
    print(f"  per-query reference: {t_ref_sub:.2f} s on {len(ref_rows)} queries, "
          f"extrapolated linearly to {n_q}: {t_ref:8.2f} s")
    print(f"  speed-up: {t_ref / t_fast:.1f}x   max |difference| on the {len(ref_rows)}-query "
          f"subset: {err:.2e} ({'OK' if err <= 1e-9 else 'FAIL'} at 1e-9)")
    print("  metrics:", json.dumps({k: round(v, 4) for k, v in fast.items()}))


def _memory_child(n_db: int, n_q: int) -> None:
    qf, df, ql, dl = make_data(n_db, n_q, 64, 100, multi=False)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    evaluate_retrieval(qf, df, ql, dl, ks=KS, radii=RADII, precision_ks=PKS)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mb": (peak - base) / 1024, "seconds": seconds}))


def memory(n_db: int, n_q: int) -> None:
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(n_db), str(n_q)],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    print(f"memory: ImageNet scale, database {n_db:,} x 64 bits, {n_q:,} queries, 100 classes")
    print(f"  peak extra RSS during evaluate_retrieval: {res['extra_mb']:.0f} MB "
          f"(limit 2048 MB: {'OK' if res['extra_mb'] <= 2048 else 'FAIL'}); "
          f"time {res['seconds']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x smaller problem")
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(*args.memory_child)
        return 0
    if args.quick:
        speed(10_000, 200, 50)
        memory(12_800, 500)
    else:
        speed(100_000, 2_000, 100)
        memory(128_000, 5_000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
