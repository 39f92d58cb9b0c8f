"""Exact, vectorised retrieval metrics with h2q's definitions.

Definitions (h2q, "Deep Hashing via Householder Quantization", kept for
compatibility with published numbers):

* features are L2-normalised (a zero row stays zero instead of NaN) and the
  hash code is ``np.sign`` of them, so an exactly-zero component gives a 0 bit;
* Hamming distance = ``(nbits - q·d) / 2`` of the codes, exactly h2q's
  ``calc_hammingDist``: the number of differing positions for ±1 codes, and
  a 0 bit counts 1/2 whatever the other code holds (+1, -1 or 0). Zero bits
  only arise from feature components that are exactly 0;
* ranking key = ``10 * hamming + ||q - d||²`` of the normalised features
  (the second term is <= 4, so it only breaks Hamming ties), ascending, ties
  broken by database index (a stable argsort);
* relevance = ``labels_q · labels_db > 0``;
* AP at a cutoff (top ``k``, all items within Hamming ``radius``, or the whole
  list) = ``(1/R) Σ_i i / position_i`` over the R relevant items inside the
  cutoff, positions 1-based; AP = 0 when R = 0; mAP = mean over ALL queries.
* precision@k = relevant items among the top ``min(k, N)`` divided by
  ``min(k, N)`` (a cutoff larger than the database is the whole database).

h2q ranks the database once per query with a float64 argsort (minutes at
ImageNet scale). Here queries are processed in chunks whose buffers are
sized from ``memory_budget`` and reused (see ``_ranking``), and every metric
is read off the ranked positions of the relevant items, exactly in the
reference's stable order. When the full-list mAP is asked for, each chunk's
rankings are sorted once in full. Otherwise (top-k and radius cutoffs only,
e.g. ``retrieval_map(k=5000)``) only the ranking prefix the cutoffs reach is
selected in O(N), by counting the integer 2·hamming values, and sorted; the
values are bit-identical to the full sort's. Chunks run on up to four
threads (NumPy's sort and BLAS, and the compiled per-row loops, release the
GIL); per-query values are summed once at the end, so results do not depend
on the chunking.

Exactness: keys come from GEMMs, so they can differ from the reference's
elementwise float64 keys in the last bits (by less than a proven bound,
~3e-13 at 64 bits). Keys closer than a few times that bound (and all exact
ties, e.g. duplicate database rows or integer-valued features) are
re-ordered with the reference's own arithmetic, so the ranking is the
reference's stable ranking exactly, ties broken by database index.
(h2q's own ``np.argsort`` was not stable: its order of exactly tied keys
was an artefact of the sort algorithm.)
"""
from __future__ import annotations

import contextlib
import math
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from biohash.errors import ConfigError, DataError
from biohash.metrics._kernels import row_ap
from biohash.metrics._ranking import (Prepared, Workspace, prepare, radius_key, rank_prefix,
                                      rank_rows)
from biohash.metrics.keys import KS, PRECISION_KS, RADII

__all__ = ["retrieval_map", "evaluate_retrieval", "normalize_features", "hash_codes", "warm_up"]

#: Chunks run on at most this many threads (each with its own workspace).
_MAX_WORKERS = 4
_MIN_PAIRS_PER_WORKER = 4_000_000
_DEFAULT_MEMORY_BUDGET = 256 * 2**20


def normalize_features(features: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float64; an all-zero row stays zero."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def hash_codes(features: np.ndarray) -> np.ndarray:
    """h2q's hash codes: ``np.sign`` of the normalised features (int8, 0 kept)."""
    return np.sign(normalize_features(features)).astype(np.int8)


# --------------------------------------------------------------------------- validation
def _check_2d(name: str, a: object) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array (items x columns); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ConfigError(f"{name} is empty (shape {arr.shape}); need at least one item and column")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ConfigError(f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


def _check_inputs(qf, df, ql, dl) -> tuple[np.ndarray, ...]:
    qf, df = _check_2d("query_features", qf), _check_2d("db_features", df)
    ql, dl = _check_2d("query_labels", ql), _check_2d("db_labels", dl)
    if qf.shape[1] != df.shape[1]:
        raise ConfigError(f"query_features has {qf.shape[1]} bits but db_features has "
                          f"{df.shape[1]}; both must have the same code length")
    if ql.shape[1] != dl.shape[1]:
        raise ConfigError(f"query_labels has {ql.shape[1]} label columns but db_labels has "
                          f"{dl.shape[1]}; both must have the same label width")
    for fname, f, lname, lab in (("query_features", qf, "query_labels", ql),
                                 ("db_features", df, "db_labels", dl)):
        if f.shape[0] != lab.shape[0]:
            raise ConfigError(f"{lname} has {lab.shape[0]} rows but {fname} has {f.shape[0]}; "
                              "need one label row per item")
        if not np.isfinite(f).all():
            raise DataError(f"{fname} contain NaN or inf; cannot rank (did training diverge?)")
        if not np.isin(lab, (0, 1)).all():
            raise ConfigError(f"{lname} must be 0/1 (multi-hot); found values "
                              f"{np.unique(lab[~np.isin(lab, (0, 1))])[:5].tolist()}")
    return qf, df, ql, dl


def _check_cutoff(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- metrics
def _chunk_full(p: Prepared, ws: Workspace, start: int, stop: int, fixed: np.ndarray,
                radii: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """AP and relevant counts (n, n_cut) of queries ``start:stop`` from full rankings.

    ``fixed``: list lengths of the fixed cutoffs (full list, top-k's); the
    radius cutoffs' lengths (items within the radius: a prefix of the
    ranking, since 10·hamming dominates the key) are found per query by
    searching the sorted words.
    """
    thresholds = np.array([p.packing.threshold(radius_key(h)) for h in radii],
                          dtype=p.packing.dtype)
    ap = np.zeros((stop - start, len(fixed) + len(radii)))
    n_rel = np.zeros(ap.shape, dtype=np.int64)
    lengths = np.empty(ap.shape[1], dtype=np.int64)
    lengths[:len(fixed)] = fixed
    for r, row in enumerate(rank_rows(p, ws, start, stop)):
        lengths[len(fixed):] = np.searchsorted(row, thresholds)
        row_ap(row, lengths, ws.found, ap[r], n_rel[r])
    return ap, n_rel


def _chunk_prefix(p: Prepared, ws: Workspace, start: int, stop: int, fixed: np.ndarray,
                  radii: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_chunk_full` for top-k and radius cutoffs only, from ranking
    prefixes (``_ranking.rank_prefix``): O(N) selection instead of a sort."""
    ap = np.zeros((stop - start, len(fixed) + len(radii)))
    n_rel = np.zeros(ap.shape, dtype=np.int64)
    lengths = np.empty(ap.shape[1], dtype=np.int64)
    lengths[:len(fixed)] = fixed
    radius2 = [min(2 * h, 2 * p.nbits) for h in radii]  # 2·hamming bound of each radius
    prefixes = rank_prefix(p, ws, start, stop, depth=int(max(fixed, default=0)),
                           radius2=max(radius2, default=0))
    for r, (words, counts) in enumerate(prefixes):
        lengths[len(fixed):] = counts[radius2]
        row_ap(words, lengths, ws.found, ap[r], n_rel[r])
    return ap, n_rel


def _single_threaded_blas(enabled: bool) -> contextlib.AbstractContextManager:
    """Our chunk threads already use the cores; BLAS threads on top of them
    oversubscribe (measured ~1.6x slower on 2 busy cores)."""
    if not enabled:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: scikit-learn's dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _evaluate(query_features, db_features, query_labels, db_labels, *, full: bool,
              ks: Sequence[int], radii: Sequence[int], precision_ks: Sequence[int],
              memory_budget: int, workers: int | None = None) -> dict[str, float]:
    ks = [_check_cutoff("k", k, 1) for k in ks]
    precision_ks = [_check_cutoff("precision k", k, 1) for k in precision_ks]
    radii = [_check_cutoff("radius", h, 0) for h in radii]
    _check_cutoff("memory_budget", memory_budget, 1)
    if not (full or ks or radii or precision_ks):
        raise ConfigError("nothing to compute: full_map=False and no ks, radii or precision_ks")
    query_features, db_features, query_labels, db_labels = _check_inputs(
        query_features, db_features, query_labels, db_labels)
    n_db, nbits = db_features.shape
    all_ks = sorted(set(ks) | set(precision_ks))
    cut_ks = [min(k, n_db) for k in all_ks]  # a cutoff beyond the database is the database
    # The prefix path pays off only when its prefixes can be shorter than the database.
    prefix = not full and max(cut_ks, default=0) < n_db and max(radii, default=0) < nbits
    p = prepare(normalize_features(query_features), normalize_features(db_features),
                query_labels, db_labels, indexed=prefix)
    fixed = np.array(cut_ks if prefix else [p.n_db, *cut_ks], dtype=np.int64)
    chunk = _chunk_prefix if prefix else _chunk_full
    n_q = len(p.q_norm)
    workers = max(1, min(workers or os.cpu_count() or 1, _MAX_WORKERS))
    if n_q * p.n_db < _MIN_PAIRS_PER_WORKER * workers:
        workers = 1  # small (e.g. per-epoch validation): threads cost more than they save
    rows = max(1, min(-(-n_q // workers),
                      memory_budget // (workers * Workspace.bytes_per_pair(p) * p.n_db)))
    # as many chunks as the budget needs, rounded up to a multiple of the workers and
    # of equal size, so that no thread is left with the last chunk alone
    n_chunks = -(-n_q // rows)
    n_chunks += -n_chunks % workers
    rows = -(-n_q // n_chunks)
    spans = [(s, min(s + rows, n_q)) for s in range(0, n_q, rows)]
    spaces = queue.SimpleQueue()
    for _ in range(min(workers, len(spans))):
        spaces.put(Workspace.of(p, rows))

    def run(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ws = spaces.get()  # one workspace per running task: bounded memory
        try:
            return chunk(p, ws, *span, fixed, radii)
        finally:
            spaces.put(ws)

    # Per-query values, summed once at the end: results do not depend on
    # the chunking, so both paths give bit-identical metrics.
    ap = np.zeros((n_q, len(fixed) + len(radii)))
    n_rel = np.zeros(ap.shape, dtype=np.int64)
    # NumPy's sort, BLAS and the compiled loops release the GIL, so threads overlap chunks.
    with _single_threaded_blas(workers > 1), ThreadPoolExecutor(max_workers=workers) as pool:
        for (s, e), (ap_c, n_rel_c) in zip(spans, pool.map(run, spans) if workers > 1
                                           else map(run, spans)):
            ap[s:e], n_rel[s:e] = ap_c, n_rel_c

    return _results(ap, n_rel, fixed, full=full, ks=ks, all_ks=all_ks, radii=radii,
                    precision_ks=precision_ks)


def _results(ap: np.ndarray, n_rel: np.ndarray, fixed: np.ndarray, *, full: bool,
             ks: Sequence[int], all_ks: Sequence[int], radii: Sequence[int],
             precision_ks: Sequence[int]) -> dict[str, float]:
    """Means over queries of the per-query columns: [full list if ``full``]
    + ``all_ks`` (lengths ``fixed``) + ``radii``, under h2q's keys."""
    def mean(values: np.ndarray) -> float:
        return math.fsum(values) / len(ap)  # exactly rounded: independent of summation order

    out: dict[str, float] = {}
    first_k = len(fixed) - len(all_ks)  # column of the first top-k cutoff
    if full:
        out["mAP"] = mean(ap[:, 0])
    for j, k in enumerate(all_ks, start=first_k):
        if k in ks:
            out[f"mAP_at_k={k}"] = mean(ap[:, j])
    for j, h in enumerate(radii, start=len(fixed)):
        out[f"mAP_at_h={h}"] = mean(ap[:, j])
    for j, k in enumerate(all_ks, start=first_k):
        if k in precision_ks:
            out[f"P_at_k={k}"] = mean(n_rel[:, j] / fixed[j])
    return out


def evaluate_retrieval(query_features: np.ndarray, db_features: np.ndarray,
                       query_labels: np.ndarray, db_labels: np.ndarray, *,
                       ks: Sequence[int] = KS, radii: Sequence[int] = RADII,
                       precision_ks: Sequence[int] = PRECISION_KS, full_map: bool = True,
                       memory_budget: int = _DEFAULT_MEMORY_BUDGET) -> dict[str, float]:
    """Every retrieval metric in one pass over query chunks, h2q's JSON keys.

    Returns ``{"mAP" (if full_map), "mAP_at_k=<k>" for ks, "mAP_at_h=<h>"
    for radii, "P_at_k=<k>" for precision_ks}`` (see the module docstring
    for the exact definitions). Features are raw hash-layer outputs
    (N x nbits, any float dtype); labels are 0/1 multi-hot (N x L, any
    numeric dtype). ``memory_budget`` (bytes) bounds the per-chunk working
    set.

    The full-list ``mAP`` needs every query's whole database sorted; without
    it (``full_map=False``) only the ranking prefix the cutoffs reach is
    selected and sorted, with bit-identical values.

    Raises:
        ConfigError: mismatched shapes, empty arrays, non-0/1 labels,
            k < 1 or radius < 0 (or not integers), nothing to compute.
        DataError: features containing NaN or inf.
    """
    return _evaluate(query_features, db_features, query_labels, db_labels, full=full_map,
                     ks=ks, radii=radii, precision_ks=precision_ks,
                     memory_budget=memory_budget)


def retrieval_map(query_features: np.ndarray, db_features: np.ndarray,
                  query_labels: np.ndarray, db_labels: np.ndarray, *,
                  k: int | None = None, radius: int | None = None) -> float:
    """mAP over the full ranking, the top ``k``, or the items within Hamming
    ``radius`` (at most one of ``k`` / ``radius``); h2q's definition.

    With ``k`` or ``radius`` only the ranking prefix they reach is sorted
    (see :func:`evaluate_retrieval`).

    Raises the same errors as :func:`evaluate_retrieval`; giving both ``k``
    and ``radius`` is a ConfigError.
    """
    if k is not None and radius is not None:
        raise ConfigError(f"give k or radius, not both; got k={k!r}, radius={radius!r}")
    res = _evaluate(query_features, db_features, query_labels, db_labels,
                    full=k is None and radius is None,
                    ks=() if k is None else (k,), radii=() if radius is None else (radius,),
                    precision_ks=(), memory_budget=_DEFAULT_MEMORY_BUDGET)
    (value,) = res.values()
    return value


def warm_up() -> None:
    """Compile, or load from Numba's on-disk cache, the kernels of the common
    paths (full list and ranking prefixes; unique rows, duplicates and 0 bits;
    one-hot, multi-label, and over 64 labels as MS_COCO's 80) on tiny inputs.

    The first process after an install compiles them (~10 s on 2 cores) and
    caches them next to the package; later processes load them in well under
    a second. Called by ``make``'s install step, by cluster node setup (so
    trials do not compile) and before the test suite's workers start.
    """
    rng = np.random.default_rng(0)
    q, d = rng.standard_normal((3, 16)), rng.standard_normal((40, 16))
    multi = (rng.random((3, 4)) < 0.5, rng.random((40, 4)) < 0.5)
    wide = (rng.random((3, 80)) < 0.1, rng.random((40, 80)) < 0.1)
    one_hot = (np.eye(4)[rng.integers(0, 4, 3)], np.eye(4)[rng.integers(0, 4, 40)])
    tied = d.copy()
    tied[:20] = tied[20:]      # duplicate rows
    tied[:3, 0] = 0.0          # 0 bits
    for db in (d, tied):
        for labels in (multi, one_hot, wide):
            evaluate_retrieval(q, db, labels[0], labels[1], ks=(5,), radii=(1,),
                               precision_ks=(5,))
            retrieval_map(q, db, labels[0], labels[1], k=5)
