"""Exact stable ranking of a database for a chunk of queries (internal).

h2q ranks with ``argsort(10·hamming + ||q - d||²)`` per query, hamming =
``(nbits - q·d) / 2`` on sign codes (a 0 bit counts 1/2 against anything).
Here a chunk of queries is ranked at once:

1. keys come from GEMMs, pre-multiplied by a power of two ``scale``
   (exact): ``||q - d||²`` as one float64 GEMM of augmented matrices
   ``[-2q, |q|², 1]·[d, 1, |d|²]`` and ``10·hamming`` as one exact float32
   GEMM of sign codes. The full sort counts the Hamming distance instead
   (popcount of the XOR of sign bits, an integer number of bins added to
   the rounded distance, in the same compiled pass that packs the words;
   codes with 0 bits are patched by a GEMV);
2. each key is quantised monotonically into the high bits of an integer
   "word" whose lowest bit is the item's relevance, so one SIMD value sort
   orders the items and carries their relevance along;
3. neighbours whose quantised keys are less than two bins apart (bins are
   at least 4x the largest possible difference between a GEMM key and the
   reference's key, see :class:`Packing`) are re-ordered by the reference's
   own float64 key (``10·hamming + Σ(q - d)²`` rounded as NumPy rounds it,
   :func:`_kernels.exact_keys`) and index. The
   result is the reference's stable order exactly, ties included, whatever
   the GEMM rounding.

Two ways to use this:

* :func:`rank_rows` sorts every query's whole database (needed for the
  full-list mAP). Its words are 32-bit, ``quantised key | relevance``:
  metrics only need the relevance of each ranked position, and NumPy sorts
  32-bit words ~2.5x faster than 64-bit ones. Both paths repair only the
  runs of close keys that mix relevant and irrelevant items (the order
  inside any other run changes no metric); without an index in the word,
  this one finds their items by quantised key (:func:`_kernels.run_members`);
* :func:`rank_prefix` ranks only the shortest prefix of each ranking that
  the top-k and Hamming-radius cutoffs need. Hamming dominates the key
  (consecutive hamming values are 10·0.5 = 5 apart, the distance term is in
  [0, 4]), so "every item with 2·hamming <= t" is always a prefix of the
  ranking. Counting the integer 2·hamming values (at most 2·nbits + 1 of
  them) finds the smallest such t holding the top k in O(N); only those
  items get keys, relevance and a sort. Its words are 64-bit, ``quantised
  key | database index | relevance``, so the repair re-sorts a mixed run's
  words directly, and a run never crosses a hamming boundary (keys there
  are >= 1 apart): the prefix's relevance is exactly that of the first
  items of the full ranking.

All large arrays live in a reusable per-chunk workspace: fresh 30 MB arrays
per chunk would cost more in page faults than the arithmetic. Only the GEMMs
run on the whole chunk; everything after them (keys, relevance, packing,
sort, repair) runs one query row at a time, so a row's words stay in the
core's cache through all of its passes instead of streaming each
chunk-sized pass through memory. The full sort's per-row passes are
compiled loops (:mod:`biohash.metrics._kernels`): one pass where NumPy
needed about ten over the row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from biohash.metrics import _kernels

__all__ = ["Prepared", "prepare", "Packing", "Workspace", "rank_rows", "rank_prefix",
           "radius_key"]

_MAGIC = _kernels.MAGIC
#: Runs spanning at most this many quantised keys are screened with a table (_kernels.run_members).
_TABLE_KEYS = 1 << 12
_MAGIC_BITS = int(np.array(_MAGIC).view(np.int64))
_NO_CLASS = np.empty(0, dtype=np.int32)
_NO_INVERSE = np.empty(0, dtype=np.intp)


@dataclass(frozen=True)
class Packing:
    """Layout of a sort word: quantised key | [database index] | relevance bit.

    ``indexed`` (the prefix path): int64 words holding the database index,
    so a sorted word names its item. Otherwise (the full path): uint32 words
    ``quantised key | relevance``.

    Exactness: a key from the GEMMs and the reference's own float64 key of
    the same pair differ by less than ``error`` (rounding of two sums of
    ``nbits + 2`` terms bounded by 4, and of the additions of 10·hamming).
    Bins are at least ``4·error`` wide, so two items whose GEMM order differs
    from the reference's order (ties by index included) have quantised keys
    at most one bin apart, and so has every item sorted between them: the
    run repair, over neighbours less than two bins apart, puts them all in
    the reference's order.
    """

    n_db: int
    nbits: int
    indexed: bool = True

    @property
    def key_max(self) -> float:
        """An upper bound of every key: 10·nbits + 4 (plus rounding)."""
        return 10.0 * self.nbits + 5.0

    @property
    def error(self) -> float:
        """Bound of |GEMM key - reference key| (unit roundoff 2**-53)."""
        return (4.0 * 2 * (self.nbits + 2) + 4.0 * self.key_max) * 2.0**-53

    @property
    def shift(self) -> int:
        """Bits below the quantised key: index and relevance, or relevance alone."""
        return max(1, (self.n_db - 1).bit_length()) + 1 if self.indexed else 1

    @property
    def dtype(self) -> type:
        return np.int64 if self.indexed else np.uint32

    @property
    def near(self) -> int:
        """Words of neighbours less than this apart have keys less than two bins apart."""
        return 2 << self.shift

    @property
    def scale(self) -> float:
        """A power of two (so scaling the GEMM inputs by it is exact) keeping
        quantised keys below 2**(62 - shift) (indexed) or 2**31 (no overflow,
        sign bit free) and below 2**51 (the rounding trick below), with bins
        (1 / scale) at least 4·error wide."""
        room = 62 - self.shift if self.indexed else 31
        limit = min(2.0 ** min(room, 51) / self.key_max, 1.0 / (4.0 * self.error))
        return 2.0 ** math.floor(math.log2(limit))

    def offsets(self, index: np.ndarray) -> np.ndarray:
        """Per-item constants for :meth:`words_inplace`: ``2·index`` minus the
        rounding constant's bits moved up by the shift (mod 2**64)."""
        return index.astype(np.uint64) * np.uint64(2) + np.uint64(
            -(_MAGIC_BITS << self.shift) % 2**64)

    def words_inplace(self, scaled_key: np.ndarray, offsets: np.ndarray,
                      rel: np.ndarray) -> np.ndarray:
        """Indexed words ``round(key·scale) | index | relevance``, in ``scaled_key``'s buffer.

        Adding 2**52 to ``x = key·scale`` (0 <= x < 2**51) leaves round(x)
        in the low mantissa bits of the float, above the constant bits of
        2**52; shifting the raw bits left and adding :meth:`offsets` (both
        wrap mod 2**64) removes that constant and puts the index in. Every
        step is monotone in x and no float->int conversion pass is needed.
        """
        scaled_key += _MAGIC
        words = scaled_key.view(np.uint64)
        words <<= np.uint64(self.shift)
        words += offsets
        np.bitwise_or(words, rel, out=words)
        return words.view(np.int64)

    @staticmethod
    def quantise(scaled_key: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``round(key·scale)`` of every item as uint32: a strided view into the
        float64 buffer ``out`` (same rounding trick as :meth:`words_inplace`;
        exact while ``key·scale < 2**31``). Writing to ``out`` instead of the
        key leaves the GEMM's chunk-sized output clean: no write-back of it."""
        np.add(scaled_key, _MAGIC, out=out)
        halves = out.view(np.uint32)
        return halves[::2] if np.little_endian else halves[1::2]

    def words32(self, quantised: np.ndarray, rel: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Unindexed words ``round(key·scale) << 1 | relevance`` (uint32, into ``out``)."""
        np.left_shift(quantised, 1, out=out)
        return np.bitwise_or(out, rel, out=out)

    def threshold(self, key: float) -> int:
        """Words below this have keys quantised below ``key``'s bin."""
        q = float(np.float64(key) * self.scale + _MAGIC)
        return (int(np.array(q).view(np.int64)) - _MAGIC_BITS) << self.shift

    def index(self, words: np.ndarray) -> np.ndarray:
        return (words >> 1) & ((1 << (self.shift - 1)) - 1)


@dataclass(frozen=True)
class Prepared:
    """Per-call constants (queries Q, database N, unique database rows U)."""

    q_norm: np.ndarray     # (Q, nbits) float64 normalised queries
    u_norm: np.ndarray     # (U, nbits) float64 normalised unique database rows
    q_gemm: np.ndarray     # (Q, nbits + 2) float64 scale·[-2q, |q|², 1]
    u_gemm: np.ndarray     # (U, nbits + 2) float64 [d, 1, |d|²]
    q_ham: np.ndarray      # (Q, nbits + 1) float32; scale·10·hamming = q_ham @ u_ham.T exactly
    u_ham: np.ndarray      # (U, nbits + 1) float32
    # Hamming by popcount (full path): (Q, W) / (U, W) uint64 negative-sign bits of the
    # codes, None when too many database codes have 0 bits (the Hamming GEMM then)
    q_sign_bits: np.ndarray | None
    u_sign_bits: np.ndarray | None
    q_zero: np.ndarray         # (Q,) bool: the query's code has a 0 bit (its row uses a GEMV)
    u_zero_rows: np.ndarray    # (Z,) unique database rows whose code has a 0 bit
    u_zero_codes: np.ndarray   # (Z, nbits) float32 their codes (exact 2·hamming by a GEMV)
    inverse: np.ndarray | None  # (N,) database row -> unique row; None if all unique
    q_label_bits: np.ndarray  # (Q, W) uint64 labels packed 64 to a word
    d_label_bits: np.ndarray  # (N, W) uint64
    q_class: np.ndarray | None  # (Q,) the label of one-hot rows; None unless all are one-hot
    d_class: np.ndarray | None  # (N,)
    packing: Packing
    offsets: np.ndarray    # (N,) uint64 Packing.offsets of every database index (indexed)

    @property
    def n_db(self) -> int:
        return len(self.d_label_bits)

    @property
    def n_unique(self) -> int:
        return len(self.u_norm)

    @property
    def nbits(self) -> int:
        return self.q_norm.shape[1]


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
        if len(first) == len(x):  # only colliding hashes (e.g. rows x and -x), no duplicate
            return np.arange(len(x)), None
        inverse = inverse.ravel()
    return first, inverse.astype(np.intp)


def _hamming_parts(q_codes: np.ndarray, d_codes: np.ndarray,
                   scale: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 matrices with ``scale·10·hamming = Q @ D.T`` exactly.

    h2q's hamming is ``(nbits - q·d) / 2`` on codes in {-1, 0, +1}: a 0 bit
    (``np.sign`` of an exactly-zero component) counts 1/2 against +1, -1 and
    0 alike. So ``10·hamming = 5·nbits - 5·q·d``; every partial sum is an
    integer < 2**24 times the power of two ``scale``, so the float32 GEMM is
    exact. The constant rides along as a column.
    """
    nbits = q_codes.shape[1]
    q = np.hstack([-5.0 * q_codes, np.full((len(q_codes), 1), 5.0 * nbits)])
    return ((scale * q).astype(np.float32),
            np.hstack([d_codes, np.ones((len(d_codes), 1))]).astype(np.float32))


def _pack_labels(labels: np.ndarray) -> np.ndarray:
    """0/1 label rows as bits in uint64 words (N, ceil(L / 64)), column-major
    so that one word column is contiguous: relevance of a few items is then
    one gather of 8-byte words and an AND."""
    bits = np.packbits(np.asarray(labels) != 0, axis=1)  # (N, ceil(L / 8)) uint8
    pad = -bits.shape[1] % 8
    words = np.ascontiguousarray(np.pad(bits, ((0, 0), (0, pad)))).view(np.uint64)
    return np.asfortranarray(words)


def _classes(q_labels: np.ndarray, d_labels: np.ndarray) -> tuple[np.ndarray | None, ...]:
    """Label index of every row if all rows are one-hot (single-label data:
    relevance is then equality of two integers), else (None, None)."""
    if not ((q_labels != 0).sum(axis=1) == 1).all() or not ((d_labels != 0).sum(axis=1) == 1).all():
        return None, None
    return (np.argmax(q_labels != 0, axis=1).astype(np.int32),
            np.argmax(d_labels != 0, axis=1).astype(np.int32))


def prepare(q_norm: np.ndarray, d_norm: np.ndarray, q_labels: np.ndarray,
            d_labels: np.ndarray, *, indexed: bool = True) -> Prepared:
    """Constants for ranking; features already L2-normalised (float64).

    ``indexed``: for :func:`rank_prefix` (64-bit words naming their item);
    otherwise for :func:`rank_rows` (32-bit words).
    """
    first, inverse = _unique_rows(d_norm)
    u_norm = d_norm[first] if inverse is not None else d_norm
    nbits = q_norm.shape[1]
    pk = Packing(len(d_norm), nbits, indexed)
    q_code, u_code = np.sign(q_norm), np.sign(u_norm)
    q_ham, u_ham = _hamming_parts(q_code, u_code, pk.scale)
    u_zero_rows = np.flatnonzero((u_code == 0).any(axis=1))
    # Popcount (full path only: the prefix path needs 2·hamming of every pair from its GEMM)
    # counts differing ±1 bits; the few codes with 0 bits are patched per query.
    # scale·5 must be an integer: one step of 2·hamming is that many bins of a quantised key.
    popcount = (not indexed and len(u_zero_rows) <= max(64, len(u_code) // 16)
                and float(5 * pk.scale).is_integer())
    q_sq = np.einsum("ij,ij->i", q_norm, q_norm)[:, None]
    u_sq = np.einsum("ij,ij->i", u_norm, u_norm)[:, None]
    q_class, d_class = _classes(q_labels, d_labels)
    return Prepared(
        q_norm=q_norm, u_norm=u_norm,
        q_gemm=pk.scale * np.hstack([-2.0 * q_norm, q_sq, np.ones_like(q_sq)]),
        u_gemm=np.hstack([u_norm, np.ones_like(u_sq), u_sq]),
        q_ham=q_ham, u_ham=u_ham, inverse=inverse,
        q_sign_bits=_pack_labels(q_code < 0) if popcount else None,
        u_sign_bits=_pack_labels(u_code < 0) if popcount else None,
        q_zero=(q_code == 0).any(axis=1), u_zero_rows=u_zero_rows,
        u_zero_codes=u_code[u_zero_rows].astype(np.float32),
        q_label_bits=_pack_labels(q_labels), d_label_bits=_pack_labels(d_labels),
        q_class=q_class, d_class=d_class, packing=pk,
        offsets=pk.offsets(np.arange(len(d_norm))) if indexed else np.empty(0, np.uint64),
    )


def _h2_dtype(nbits: int) -> type:
    """Smallest unsigned type holding 2·hamming (<= 2·nbits)."""
    return np.uint8 if 2 * nbits <= np.iinfo(np.uint8).max else np.uint16


@dataclass
class Workspace:
    """Reusable buffers for up to ``rows`` queries.

    ``full``: buffers for :func:`rank_rows` (the distance GEMM of every pair,
    and the Hamming GEMM unless ``popcount``; per row: keys, sort words and
    the mixed-run repair's scratch); otherwise for :func:`rank_prefix` (both
    GEMMs and 2·hamming of every pair; keys and relevance only for the
    prefix, per query).
    """

    rows: int
    n_db: int
    n_unique: int
    nbits: int
    full: bool = True
    popcount: bool = False
    dist: np.ndarray = field(init=False)   # (rows, U) float64 scaled keys on unique rows
    ham: np.ndarray = field(init=False)    # (rows, U) float32 scale·10·hamming (not popcount)
    key: np.ndarray = field(init=False)    # full: (U,) float64 one row's keys, rounded
    qkey_u: np.ndarray = field(init=False)  # full: (U,) uint32 quantised keys
    unsorted: np.ndarray = field(init=False)  # full: (N,) uint32 sort words by database index
    words: np.ndarray = field(init=False)  # full: (N,) uint32 one row's sorted words
    first: np.ndarray = field(init=False)  # (N // 2 + 1,) int64 runs' first positions
    last: np.ndarray = field(init=False)   # (N // 2 + 1,) int64 ... and last positions
    items: np.ndarray = field(init=False)  # full: (N,) int64 the mixed runs' items
    run: np.ndarray = field(init=False)    # full: (N,) int64 ... and their run
    table: np.ndarray = field(init=False)  # full: (8192,) uint8 bit set screening the runs' keys
    found: np.ndarray = field(init=False)  # (N,) int64 positions of one row's relevant items
    h2u: np.ndarray = field(init=False)    # prefix: (rows, U) uint8/16 2·hamming
    h2: np.ndarray = field(init=False)     # prefix: (rows, N) (aliases h2u if U == N)

    @staticmethod
    def bytes_per_pair(p: Prepared) -> int:
        """Upper bound of the workspace bytes per query-item pair (chunk-sized buffers)."""
        # full: dist 8 (+ ham 4 without popcount; per-row buffers: at most 52 bytes per
        # item, once); prefix: dist 8 + ham 4 + 2·hamming 2 (+ 2 with duplicates)
        if not p.packing.indexed:
            return 8 if p.u_sign_bits is not None else 12
        return 16

    @classmethod
    def of(cls, p: Prepared, rows: int) -> Workspace:
        """Buffers for ranking ``rows`` queries at a time as ``p`` was prepared for."""
        return cls(rows, p.n_db, p.n_unique, p.nbits, full=not p.packing.indexed,
                   popcount=p.u_sign_bits is not None)

    def __post_init__(self) -> None:
        r, n, u = self.rows, self.n_db, self.n_unique
        empty = np.empty(0)
        self.dist = np.empty((r, u))
        self.ham = np.empty((r, u), dtype=np.float32) if not (self.full and self.popcount) \
            else np.empty((0, u), dtype=np.float32)
        self.key = self.qkey_u = self.unsorted = self.words = empty
        self.items = self.run = self.table = self.h2u = self.h2 = empty
        self.first = np.empty(n // 2 + 1, dtype=np.int64)
        self.last = np.empty(n // 2 + 1, dtype=np.int64)
        self.found = np.empty(n, dtype=np.int64)
        if self.full:
            self.key = np.empty(u)
            self.qkey_u = np.empty(u, dtype=np.uint32)
            self.unsorted = np.empty(n, dtype=np.uint32)
            self.words = np.empty(n, dtype=np.uint32)
            self.items = np.empty(n, dtype=np.int64)
            self.run = np.empty(n, dtype=np.int64)
            self.table = np.zeros((1 << 16) // 8, dtype=np.uint8)
        else:
            self.h2u = np.empty((r, u), dtype=_h2_dtype(self.nbits))
            self.h2 = self.h2u if u == n else np.empty((r, n), dtype=self.h2u.dtype)


def radius_key(radius: int) -> float:
    """A key between hamming <= radius (keys <= 10·radius + 4) and
    hamming >= radius + 1/2 (keys >= 10·radius + 5)."""
    return 10.0 * radius + 4.5


def _exact_keys(p: Prepared, query: int, items: np.ndarray) -> np.ndarray:
    """The reference's float64 keys of database ``items``: 10·hamming + Σ(q - d)²."""
    rows = items if p.inverse is None else p.inverse[items]
    return _kernels.exact_keys(p.q_norm[query], p.u_norm, rows, np.empty(len(rows)))


def _repair_row(p: Prepared, ws: Workspace, query: int, row: np.ndarray) -> None:
    """Re-sort each run of close quantised keys that mixes relevant and
    irrelevant items (:func:`_kernels.mixed_runs`) of a sorted indexed row by
    (exact key, index), in place (see :class:`Packing` for why this is exact;
    the order inside any other run changes no metric).
    """
    pk = p.packing
    n_runs = _kernels.mixed_runs(row, np.int64(pk.near), ws.first, ws.last)
    for first, last in zip(ws.first[:n_runs].tolist(), ws.last[:n_runs].tolist()):
        seg = row[first:last + 1]
        idx = pk.index(seg)
        seg[:] = seg[np.lexsort((idx, _exact_keys(p, query, idx)))]


def _chunk_gemms(p: Prepared, ws: Workspace, start: int, stop: int,
                 hamming: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``scale·||q - d||²`` and (if ``hamming``) ``scale·10·hamming`` of
    queries ``start:stop`` against the unique database rows.

    The distance is not clamped at 0: GEMM rounding dips below it only by
    ~1e-16 (when q == d), which the quantisation rounds to 0 anyway.
    """
    n = stop - start
    dist = ws.dist[:n]
    np.matmul(p.q_gemm[start:stop], p.u_gemm.T, out=dist)  # (n, U)
    if not hamming:
        return dist, None
    ham = ws.ham[:n]
    np.matmul(p.q_ham[start:stop], p.u_ham.T, out=ham)      # (n, U)
    return dist, ham


def _relevance_of(p: Prepared, query: int) -> tuple:
    """The arguments after the item of ``_kernels``' relevance of an item to
    ``query``: class equality for one-hot data, else shared packed label bits."""
    one_hot = p.d_class is not None
    return (p.d_class if one_hot else _NO_CLASS, p.q_class[query] if one_hot else np.int32(0),
            p.d_label_bits, p.q_label_bits[query])


def _quantised_row(p: Prepared, ws: Workspace, query: int, dist: np.ndarray,
                   ham: np.ndarray | None) -> np.ndarray:
    """Quantised keys ``round(scale·distance) + scale·10·hamming`` of one query
    against every unique database row (``ws.qkey_u``).

    With sign bits (no Hamming GEMM) the Hamming distance is the number of
    differing bits, counted in the same pass as the rounding; database codes
    with 0 bits get their exact ``2·hamming = nbits - q·d`` from a small GEMV,
    and a query code with 0 bits its whole Hamming row from one.
    """
    pk = p.packing
    if ham is None and not p.q_zero[query]:
        assert p.q_sign_bits is not None and p.u_sign_bits is not None
        qkey = _kernels.popcount_keys(dist, p.q_sign_bits[query], p.u_sign_bits,
                                      np.uint32(10 * pk.scale), ws.qkey_u)
        if len(p.u_zero_rows):
            h2 = p.nbits - p.u_zero_codes @ np.sign(p.q_norm[query]).astype(np.float32)
            rounded = pk.quantise(dist[p.u_zero_rows], out=np.empty(len(p.u_zero_rows)))
            qkey[p.u_zero_rows] = rounded + (h2 * (5 * pk.scale)).astype(np.uint32)
        return qkey
    ham_row = ham if ham is not None else p.u_ham @ p.q_ham[query]
    key = np.add(dist, ham_row, out=ws.key)                # scale·(dist + 10·hamming)
    np.copyto(ws.qkey_u, pk.quantise(key, out=ws.key))
    return ws.qkey_u


def _row_words(p: Prepared, ws: Workspace, query: int, dist: np.ndarray,
               ham: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One query's sort words ``quantised key << 1 | relevance`` by database
    index, twice: (``ws.unsorted``, ``ws.words``, the copy to sort).

    Usually (sign bits, every database row unique, no code with 0 bits) the
    keys, relevance and words come from one compiled pass; otherwise the
    keys of the unique rows first (:func:`_quantised_row`), then the words.
    """
    relevance = _relevance_of(p, query)
    if (ham is None and not p.q_zero[query] and p.inverse is None
            and not len(p.u_zero_rows)):
        _kernels.popcount_words(dist, p.q_sign_bits[query], p.u_sign_bits,
                                np.uint32(10 * p.packing.scale), *relevance,
                                ws.unsorted, ws.words)
    else:
        qkey = _quantised_row(p, ws, query, dist, ham)
        _kernels.pack_words(qkey, _NO_INVERSE if p.inverse is None else p.inverse, *relevance,
                            ws.unsorted, ws.words)
    return ws.unsorted, ws.words


def rank_rows(p: Prepared, ws: Workspace, start: int, stop: int) -> Iterator[np.ndarray]:
    """Per query of ``start:stop``: its sorted 32-bit words (N,), a view into
    ``ws`` valid until the next row is asked for.

    The words' relevance bits, in order, are the relevance of the
    reference's ranking, position by position, and their keys ascend; the
    items are not named (``p`` must be prepared with ``indexed=False``).
    """
    assert not p.packing.indexed
    dist, ham = _chunk_gemms(p, ws, start, stop, hamming=p.u_sign_bits is None)
    for r in range(stop - start):
        query = start + r
        unsorted, words = _row_words(p, ws, query, dist[r], None if ham is None else ham[r])
        words.sort()
        _kernels.repair_relevance(words, unsorted, np.uint32(p.packing.near), p.q_norm[query],
                                  p.u_norm, _NO_INVERSE if p.inverse is None else p.inverse,
                                  ws.table, _TABLE_KEYS, ws.first, ws.last, ws.items, ws.run)
        yield words


def rank_prefix(p: Prepared, ws: Workspace, start: int, stop: int, *,
                depth: int, radius2: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per query of ``start:stop``: (sorted words of a ranking prefix, counts).

    The prefix is every item with ``2·hamming <= t`` for the smallest ``t >=
    radius2`` that holds at least ``depth`` items (``depth <= N``); its words'
    relevance bits equal those of the first words of :func:`rank_rows`'s row
    (indexed 64-bit words, not the same words). ``counts[t]`` = number
    of items with ``2·hamming <= t`` (t = 0 .. 2·nbits): the length of the
    ranking prefix within Hamming radius t/2.
    """
    n = stop - start
    dist, ham = _chunk_gemms(p, ws, start, stop)
    h2 = ws.h2u[:n]
    # 2·hamming; exact: integer quotients of a power-of-two multiple
    np.divide(ham, np.float32(5.0 * p.packing.scale), out=h2, casting="unsafe")
    if p.inverse is not None:
        h2 = np.take(h2, p.inverse, axis=1, out=ws.h2[:n])
    n_values = 2 * p.nbits + 1
    for r in range(n):
        counts = np.cumsum(np.bincount(h2[r], minlength=n_values))
        # smallest t with counts[t] >= depth, and never below the radius
        t = min(max(int(np.searchsorted(counts, depth)), radius2), n_values - 1)
        items = np.flatnonzero(h2[r] <= t)                  # ascending database index
        rows = items if p.inverse is None else p.inverse[items]
        key = dist[r, rows]                                 # same float ops as rank_rows
        key += ham[r, rows]
        rel = _kernels.relevance(items, *_relevance_of(p, start + r),
                                 np.empty(len(items), dtype=np.uint32))
        words = p.packing.words_inplace(key, p.offsets[items], rel)
        words.sort()
        _repair_row(p, ws, start + r, words)
        yield words, counts
