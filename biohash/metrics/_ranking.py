"""Exact stable ranking of a database for a chunk of queries (internal).

h2q ranks with ``np.argsort(10·hamming + ||q - d||², kind="stable")`` per
query. Here a chunk of queries is ranked at once:

1. keys come from two GEMMs: ``||q - d||²`` as one float64 GEMM of augmented
   matrices ``[-2q, |q|², 1]·[d, 1, |d|²]`` and ``10·hamming`` as one exact
   float32 GEMM of (scaled) sign codes;
2. each key is quantised monotonically into the high bits of an int64 "word"
   whose low bits hold the database index and the relevance bit, so one SIMD
   value sort gives the stable order with relevance carried along;
3. neighbours whose quantised keys are equal (~1e-11 apart, or exact ties)
   are re-ordered by the reference's own float64 key (elementwise
   ``Σ(q - d)²``) and index, so exact ties are broken by index as in the
   reference even where GEMM rounding differs between equal rows.

All large arrays live in a reusable per-chunk workspace: fresh 30 MB arrays
per chunk would cost more in page faults than the arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Prepared", "prepare", "Workspace", "rank_chunk"]

_MAGIC = 2.0**52
_MAGIC_BITS = int(np.array(_MAGIC).view(np.int64))


@dataclass(frozen=True)
class Prepared:
    """Per-call constants (queries Q, database N, unique database rows U)."""

    q_norm: np.ndarray     # (Q, nbits) float64 normalised queries
    u_norm: np.ndarray     # (U, nbits) float64 normalised unique database rows
    q_gemm: np.ndarray     # (Q, nbits + 2) float64 [-2q, |q|², 1]
    u_gemm: np.ndarray     # (U, nbits + 2) float64 [d, 1, |d|²]
    q_ham: np.ndarray      # (Q, B + 1) float32; 10·hamming = q_ham @ u_ham.T exactly
    u_ham: np.ndarray      # (U, B + 1) float32
    inverse: np.ndarray | None  # (N,) database row -> unique row; None if all unique
    q_labels: np.ndarray   # (Q, L) float32 0/1
    d_labels: np.ndarray   # (N, L) float32 0/1
    n_db: int

    @property
    def n_unique(self) -> int:
        return len(self.u_norm)


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(first index of each distinct row, inverse), or (all rows, None) without duplicates.

    Rows are grouped by a 64-bit hash of their bytes (fast) and the grouping
    is verified exactly; a hash collision falls back to a byte-wise unique.
    """
    bits = np.ascontiguousarray(x).view(np.uint64)  # (N, nbits)
    mult = np.random.default_rng(0).integers(1, 2**63, size=bits.shape[1], dtype=np.uint64) | 1
    with np.errstate(over="ignore"):
        h = (bits * mult).sum(axis=1, dtype=np.uint64)  # wraps mod 2**64
    _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    if len(first) == len(x):
        return np.arange(len(x)), None
    inverse = inverse.ravel()
    if not np.array_equal(x[first][inverse], x):
        rows = np.ascontiguousarray(x).view(np.dtype((np.void, x.itemsize * x.shape[1])))
        _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
        inverse = inverse.ravel()
    return first, inverse.astype(np.intp)


def _hamming_parts(q_codes: np.ndarray, d_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 matrices with ``10·hamming = Q @ D.T`` exactly.

    For ±1 codes hamming = (nbits - q·d)/2. With 0 bits (np.sign of an exact
    0, which differs from both +1 and -1) hamming = nbits - Σ_v [q=v][d=v]
    over v in {-1, 0, 1} (one-hot GEMM). All entries are integers < 2**24,
    so the float32 GEMM is exact; the constant rides along as a column.
    """
    nbits = q_codes.shape[1]
    if (q_codes != 0).all() and (d_codes != 0).all():
        q, d, const = -5.0 * q_codes, d_codes, 5.0 * nbits
    else:
        def onehot(c: np.ndarray) -> np.ndarray:
            return np.concatenate([c == -1, c == 0, c == 1], axis=1)
        q, d, const = -10.0 * onehot(q_codes), onehot(d_codes), 10.0 * nbits
    return (np.hstack([q, np.full((len(q), 1), const)]).astype(np.float32),
            np.hstack([d, np.ones((len(d), 1))]).astype(np.float32))


def prepare(q_norm: np.ndarray, d_norm: np.ndarray, q_labels: np.ndarray,
            d_labels: np.ndarray) -> Prepared:
    """Constants for ranking; features already L2-normalised (float64)."""
    first, inverse = _unique_rows(d_norm)
    u_norm = d_norm[first] if inverse is not None else d_norm
    q_ham, u_ham = _hamming_parts(np.sign(q_norm), np.sign(u_norm))
    q_sq = np.einsum("ij,ij->i", q_norm, q_norm)[:, None]
    u_sq = np.einsum("ij,ij->i", u_norm, u_norm)[:, None]
    return Prepared(
        q_norm=q_norm, u_norm=u_norm,
        q_gemm=np.hstack([-2.0 * q_norm, q_sq, np.ones_like(q_sq)]),
        u_gemm=np.hstack([u_norm, np.ones_like(u_sq), u_sq]),
        q_ham=q_ham, u_ham=u_ham, inverse=inverse,
        q_labels=q_labels.astype(np.float32), d_labels=d_labels.astype(np.float32),
        n_db=len(d_norm),
    )


@dataclass
class Workspace:
    """Reusable buffers for up to ``rows`` queries (<= 25 bytes per query-item pair)."""

    rows: int
    n_db: int
    n_unique: int
    dist: np.ndarray = field(init=False)   # (rows, U) float64 keys on unique rows
    ham: np.ndarray = field(init=False)    # (rows, U) float32 10·hamming
    key: np.ndarray = field(init=False)    # (rows, N) float64 (aliases dist if U == N)
    score: np.ndarray = field(init=False)  # (rows, N) float32 label overlaps
    rel: np.ndarray = field(init=False)    # (rows, N) bool

    # dist 8 + ham 4 (per unique row) + key/words 8 (only with duplicates) + score 4 + rel 1
    BYTES_PER_PAIR = 25

    def __post_init__(self) -> None:
        r, n, u = self.rows, self.n_db, self.n_unique
        self.dist = np.empty((r, u))
        self.ham = np.empty((r, u), dtype=np.float32)
        self.key = self.dist if u == n else np.empty((r, n))
        self.score = np.empty((r, n), dtype=np.float32)
        self.rel = np.empty((r, n), dtype=bool)


@dataclass(frozen=True)
class Packing:
    """Layout of a sort word: quantised key | database index | relevance bit."""

    n_db: int
    key_max: float  # an upper bound of every key

    @property
    def shift(self) -> int:
        return max(1, (self.n_db - 1).bit_length()) + 1

    @property
    def scale(self) -> float:
        # Quantised keys stay below 2**(62 - shift): no overflow, sign bit free.
        return 2.0 ** (min(62 - self.shift, 51)) / self.key_max

    def quantise_inplace(self, key: np.ndarray) -> np.ndarray:
        """round(key · scale) as int64, computed in ``key``'s buffer (returned as a view).

        Adding 2**52 leaves round(x) in the low mantissa bits of x + 2**52
        for 0 <= x < 2**52; both steps are monotone, and no float->int
        conversion pass is needed.
        """
        key *= self.scale
        key += _MAGIC
        q = key.view(np.int64)
        q -= _MAGIC_BITS
        return q

    def threshold(self, key: float) -> int:
        """Words below this have keys quantised below ``key``'s bin."""
        return int(self.quantise_inplace(np.array([key], dtype=np.float64))[0]) << self.shift

    def index(self, words: np.ndarray) -> np.ndarray:
        return (words >> 1) & ((1 << (self.shift - 1)) - 1)

    @staticmethod
    def relevance(words: np.ndarray) -> np.ndarray:
        """Relevance bits as bool: the low byte of each little-endian word."""
        if np.little_endian and words.flags.c_contiguous:
            return (words.view(np.uint8)[..., ::8] & 1).view(bool)
        return (words & 1).astype(bool)


def _exact_keys(p: Prepared, query: int, items: np.ndarray) -> np.ndarray:
    """The reference's float64 keys, elementwise: 10·hamming + Σ(q - d)²."""
    q = p.q_norm[query]
    d = p.u_norm[items if p.inverse is None else p.inverse[items]]
    ham = np.count_nonzero(np.sign(d) != np.sign(q), axis=1)
    return 10 * ham + np.sum((d - q) ** 2, axis=1)


def _repair_runs(p: Prepared, pk: Packing, query: int, row: np.ndarray,
                 cols: np.ndarray) -> None:
    """Re-sort each run of equal quantised keys (``cols``: run starts of
    adjacent equal pairs) by (exact key, index), in place."""
    for run in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1):
        seg = row[run[0]:run[-1] + 2]
        idx = pk.index(seg)
        seg[:] = seg[np.lexsort((idx, _exact_keys(p, query, idx)))]


def rank_chunk(p: Prepared, pk: Packing, ws: Workspace, start: int, stop: int) -> np.ndarray:
    """Sorted words (n, N) for queries ``start:stop`` (a view into ``ws``)."""
    n = stop - start
    dist, ham, key = ws.dist[:n], ws.ham[:n], ws.key[:n]
    score, rel = ws.score[:n], ws.rel[:n]
    np.matmul(p.q_gemm[start:stop], p.u_gemm.T, out=dist)  # ||q - d||²
    np.maximum(dist, 0.0, out=dist)  # rounding can dip below 0 when q == d
    np.matmul(p.q_ham[start:stop], p.u_ham.T, out=ham)
    dist += ham                                              # + 10·hamming
    if p.inverse is not None:
        np.take(dist, p.inverse, axis=1, out=key)
    np.matmul(p.q_labels[start:stop], p.d_labels.T, out=score)
    np.greater(score, 0.0, out=rel)                          # relevance
    words = pk.quantise_inplace(key)                         # monotone, in key's buffer
    words <<= pk.shift
    words |= np.arange(0, 2 * p.n_db, 2, dtype=np.int64)     # index, then relevance bit
    np.bitwise_or(words, rel, out=words)
    words.sort(axis=1)
    # Equal quantised keys sit in index order; repair runs whose exact keys
    # disagree (or tie). Neighbours share the quantised key iff their words
    # agree above the shift, i.e. XOR < 2**shift. Row by row: small
    # temporaries are recycled by the allocator.
    for r, row in enumerate(words):
        near = np.bitwise_xor(row[1:], row[:-1]) < (1 << pk.shift)
        if near.any():
            _repair_runs(p, pk, start + r, row, np.flatnonzero(near))
    return words
