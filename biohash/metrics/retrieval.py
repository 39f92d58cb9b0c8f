"""Exact, vectorised retrieval metrics with h2q's definitions.

Definitions (h2q, "Deep Hashing via Householder Quantization", kept for
compatibility with published numbers):

* features are L2-normalised (a zero row stays zero instead of NaN) and the
  hash code is ``np.sign`` of them, so an exactly-zero component gives a 0 bit;
* Hamming distance = number of positions where two codes differ (for ±1 codes
  ``(nbits - q·d) / 2``; a 0 differs from both +1 and -1);
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
sized from ``memory_budget`` and reused (see ``_ranking``); each chunk is
sorted ONCE, exactly in the reference's stable order, and every metric is
read off the sorted positions of the relevant items. Chunks run on up to
four threads (NumPy's sort, ufuncs and BLAS release the GIL).

Exactness: keys come from GEMMs, so they can differ from the reference's
elementwise float64 keys in the last bits. Keys closer than ~1e-11 (and all
exact ties, e.g. duplicate database rows) are re-ordered with the
reference's own arithmetic; two different keys that straddle a ~1e-11
quantisation boundary within ~1e-15 of each other could still swap, but
only if they also differ in relevance; for real-valued network outputs this
is vanishingly rare (the reference's own ordering of such keys is rounding
noise too).
"""
from __future__ import annotations

import contextlib
import os
import queue
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from biohash.errors import ConfigError, DataError
from biohash.metrics._ranking import Packing, Prepared, Workspace, prepare, rank_chunk

__all__ = ["retrieval_map", "evaluate_retrieval", "metric_name", "headline_key",
           "normalize_features", "hash_codes", "KS", "RADII", "PRECISION_KS", "REPORTED_METRICS"]

#: Chunks run on at most this many threads (each with its own workspace).
_MAX_WORKERS = 4
_MIN_PAIRS_PER_WORKER = 4_000_000
_DEFAULT_MEMORY_BUDGET = 256 * 2**20
_KEY_RE = re.compile(r"^(mAP|P)(?:_at_(k|h)=(\d+))?$")


def normalize_features(features: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float64; an all-zero row stays zero."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def hash_codes(features: np.ndarray) -> np.ndarray:
    """h2q's hash codes: ``np.sign`` of the normalised features (int8, 0 kept)."""
    return np.sign(normalize_features(features)).astype(np.int8)


# --------------------------------------------------------------------------- keys
def metric_name(key: str) -> str:
    """MLflow-safe flat name of an h2q metric key (MLflow forbids ``=``).

    ``mAP_at_k=1000 -> mAP_at_1000``, ``mAP_at_h=0 -> mAP_at_h0``,
    ``P_at_k=100 -> P_at_100``, ``mAP -> mAP``.
    """
    m = _KEY_RE.match(key)
    if m is None:
        raise ConfigError(f"unknown metric key {key!r}; expected 'mAP', 'mAP_at_k=<k>', "
                          "'mAP_at_h=<radius>' or 'P_at_k=<k>'")
    stem, kind, value = m.groups()
    if kind is None:
        return stem
    return f"{stem}_at_{value}" if kind == "k" else f"{stem}_at_h{value}"



#: What the pipeline reports: mAP@k, mAP within Hamming radius h, precision@k.
KS, RADII, PRECISION_KS = (1000, 5000), (0, 1, 2), (100, 1000)
#: Flat names of ``evaluate_retrieval``'s default keys, in report order
#: (``mAP``, ``mAP_at_1000`` ... ``P_at_1000``): result columns and MLflow keys.
REPORTED_METRICS = tuple(metric_name(key) for key in (
    "mAP", *(f"mAP_at_k={k}" for k in KS), *(f"mAP_at_h={h}" for h in RADII),
    *(f"P_at_k={k}" for k in PRECISION_KS)))

def headline_key(db: str) -> str:
    """The paper's headline metric (the trial ``score``) for dataset ``db``."""
    return "mAP_at_k=1000" if db == "ImageNet" else "mAP_at_k=5000"


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


def _prepare(qf, df, ql, dl) -> Prepared:
    qf, df, ql, dl = _check_inputs(qf, df, ql, dl)
    return prepare(normalize_features(qf), normalize_features(df), ql, dl)


# --------------------------------------------------------------------------- metrics
def _chunk_metrics(p: Prepared, pk: Packing, ws: Workspace, start: int, stop: int,
                   cutoffs: np.ndarray, thresholds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """AP and relevant counts (n, n_cut) of queries ``start:stop``.

    ``cutoffs``: list lengths of the fixed cutoffs (full list, top-k's); the
    radius cutoffs' lengths (items within the radius: a prefix of the
    ranking, since 10·hamming dominates the key) are found per query by
    searching the sorted words for ``thresholds``.
    """
    words = rank_chunk(p, pk, ws, start, stop)
    rel = pk.relevance(words)
    n_cut = len(cutoffs) + len(thresholds)
    ap = np.zeros((len(words), n_cut))
    n_rel = np.zeros((len(words), n_cut), dtype=np.int64)
    lengths = np.empty(n_cut, dtype=np.int64)
    lengths[:len(cutoffs)] = cutoffs
    for r, row in enumerate(words):
        positions = np.flatnonzero(rel[r]) + 1  # 1-based ranks of the relevant items
        lengths[len(cutoffs):] = np.searchsorted(row, thresholds)
        n_rel[r] = np.searchsorted(positions, lengths, side="right")
        if len(positions):
            # precision at the i-th relevant item = i / position_i, summed cumulatively
            csum = np.cumsum(np.arange(1, len(positions) + 1) / positions)
            hit = n_rel[r] > 0
            ap[r, hit] = csum[n_rel[r, hit] - 1] / n_rel[r, hit]
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
    p = _prepare(query_features, db_features, query_labels, db_labels)
    nbits = p.q_norm.shape[1]
    pk = Packing(p.n_db, key_max=10.0 * nbits + 5.0)
    # hamming <= h  <=>  key < 10·h + 7 (keys of one hamming value lie in [10h, 10h + 4]).
    thresholds = [pk.threshold(10.0 * h + 7.0) for h in radii]
    all_ks = sorted(set(ks) | set(precision_ks))
    cutoffs = np.array([p.n_db] + [min(k, p.n_db) for k in all_ks], dtype=np.int64)
    n_q = len(p.q_norm)
    workers = max(1, min(workers or os.cpu_count() or 1, _MAX_WORKERS))
    if n_q * p.n_db < _MIN_PAIRS_PER_WORKER * workers:
        workers = 1  # small (e.g. per-epoch validation): threads cost more than they save
    rows = max(1, min(-(-n_q // workers),
                      memory_budget // (workers * Workspace.BYTES_PER_PAIR * p.n_db)))
    spans = [(s, min(s + rows, n_q)) for s in range(0, n_q, rows)]
    spaces = queue.SimpleQueue()
    for _ in range(min(workers, len(spans))):
        spaces.put(Workspace(rows, p.n_db, p.n_unique))

    def run(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        ws = spaces.get()  # one workspace per running task: bounded memory
        try:
            return _chunk_metrics(p, pk, ws, *span, cutoffs, thresholds)
        finally:
            spaces.put(ws)

    ap_sum = np.zeros(len(cutoffs) + len(radii))
    prec_sum = np.zeros(len(all_ks))
    # NumPy's sort, ufuncs and BLAS release the GIL, so threads overlap chunks.
    with _single_threaded_blas(workers > 1), ThreadPoolExecutor(max_workers=workers) as pool:
        for ap, n_rel in (pool.map(run, spans) if workers > 1 else map(run, spans)):
            ap_sum += ap.sum(axis=0)
            prec_sum += (n_rel[:, 1:len(cutoffs)] / cutoffs[1:]).sum(axis=0)
    out: dict[str, float] = {}
    if full:
        out["mAP"] = float(ap_sum[0] / n_q)
    for j, k in enumerate(all_ks, start=1):
        if k in ks:
            out[f"mAP_at_k={k}"] = float(ap_sum[j] / n_q)
    for j, h in enumerate(radii, start=len(cutoffs)):
        out[f"mAP_at_h={h}"] = float(ap_sum[j] / n_q)
    for j, k in enumerate(all_ks):
        if k in precision_ks:
            out[f"P_at_k={k}"] = float(prec_sum[j] / n_q)
    return out


def evaluate_retrieval(query_features: np.ndarray, db_features: np.ndarray,
                       query_labels: np.ndarray, db_labels: np.ndarray, *,
                       ks: Sequence[int] = KS, radii: Sequence[int] = RADII,
                       precision_ks: Sequence[int] = PRECISION_KS,
                       memory_budget: int = _DEFAULT_MEMORY_BUDGET) -> dict[str, float]:
    """Every retrieval metric in one pass over query chunks, h2q's JSON keys.

    Returns ``{"mAP", "mAP_at_k=<k>" for ks, "mAP_at_h=<h>" for radii,
    "P_at_k=<k>" for precision_ks}`` (see the module docstring for the exact
    definitions). Features are raw hash-layer outputs (N x nbits, any float
    dtype); labels are 0/1 multi-hot (N x L, any numeric dtype).
    ``memory_budget`` (bytes) bounds the per-chunk working set.

    Raises:
        ConfigError: mismatched shapes, empty arrays, non-0/1 labels,
            k < 1 or radius < 0.
        DataError: features containing NaN or inf.
    """
    return _evaluate(query_features, db_features, query_labels, db_labels, full=True,
                     ks=ks, radii=radii, precision_ks=precision_ks,
                     memory_budget=memory_budget)


def retrieval_map(query_features: np.ndarray, db_features: np.ndarray,
                  query_labels: np.ndarray, db_labels: np.ndarray, *,
                  k: int | None = None, radius: int | None = None) -> float:
    """mAP over the full ranking, the top ``k``, or the items within Hamming
    ``radius`` (at most one of ``k`` / ``radius``); h2q's definition.

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
