"""Compiled per-row loops of the ranking (internal; Numba, GIL released).

Each loop replaces a chain of NumPy passes over one query's row (about ten
passes of 100,000 items for the full sort's key packing, mixed-run search
and AP) by one pass in cache, and the mixed-run repair's dozens of small
NumPy calls by one call. Only the per-row arithmetic moves here; the GEMMs
and the sort stay NumPy's (BLAS, SIMD sort). The reference's own float64
key is computed in NumPy's summation order (:func:`exact_keys`), so the
repair orders exactly as h2q's NumPy expression does.

Every kernel is compiled on first use and cached on disk next to this file
(or in Numba's per-user cache when the package directory is read-only);
``retrieval.warm_up`` compiles the common ones ahead. Avoided on purpose:
recursion (Numba's cache cannot reload it) and NumPy's sort and search
functions (seconds more of compiling each).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["MAGIC", "relevance", "popcount_keys", "pack_words", "popcount_words", "mixed_runs",
           "run_members", "exact_keys", "repair_relevance", "row_ap"]

_jit = njit(nogil=True, cache=True, boundscheck=False)


#: Adding this to a float in [0, 2**51) leaves it rounded (half to even) to an integer in
#: the low mantissa bits: the one rounding of every quantised key (here and ``_ranking``).
MAGIC = 2.0**52
#: Neighbour pairs per block of the vectorised screen in mixed_runs (one branch a block).
_BLOCK = 64


@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop of a uint64 (POPCNT, or a vectorised nibble lookup)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@intrinsic
def _low_bits(typingctx, x):
    """The low 32 bits of a float64's raw bits (a bit cast, no conversion)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        raw = builder.bitcast(args[0], ir.IntType(64))
        return builder.trunc(raw, ir.IntType(32))

    return types.uint32(types.float64), codegen


@njit(inline="always")
def _key(scaled, q_bits, u_bits, u, step):
    """Quantised key of unique row ``u``: ``round(scaled) + step·popcount(q ^ u)``.

    ``scaled`` in [-0.5, 2**31) is rounded half to even by adding 2**52 (the
    float's low mantissa bits are then the integer, as in ``Packing.quantise``).
    """
    if q_bits.shape[0] == 1:
        count = np.uint32(_popcount(q_bits[0] ^ u_bits[u, 0]))
    else:
        total = np.uint64(0)
        for w in range(q_bits.shape[0]):
            total += _popcount(q_bits[w] ^ u_bits[u, w])
        count = np.uint32(total)
    return _low_bits(scaled + MAGIC) + count * step


@njit(inline="always")
def _relevant(i, d_class, q_class, d_bits, q_bits):
    """Whether item ``i`` is relevant: ``d_class[i] == q_class`` for one-hot
    data (``d_class`` non-empty), else a shared label bit (``d_bits`` (N, W)
    and ``q_bits`` (W,) packed labels)."""
    if d_class.shape[0] > 0:
        return np.uint32(d_class[i] == q_class)
    if q_bits.shape[0] == 1:
        return np.uint32((d_bits[i, 0] & q_bits[0]) != 0)
    shared = np.uint64(0)
    for w in range(q_bits.shape[0]):
        shared |= d_bits[i, w] & q_bits[w]
    return np.uint32(shared != 0)


@_jit
def _count_at_most(sorted_values, x):
    """How many of ``sorted_values`` (ascending) are <= ``x`` (a binary search)."""
    lo, hi = 0, sorted_values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def relevance(items, d_class, q_class, d_bits, q_bits, out):
    """``out[k]`` = relevance (0/1) of database item ``items[k]``, as ``_relevant``."""
    for k in range(items.shape[0]):
        out[k] = _relevant(items[k], d_class, q_class, d_bits, q_bits)
    return out


@_jit
def popcount_keys(scaled_dist, q_bits, u_bits, step, out):
    """``out[u]`` = quantised key of every unique row (see ``_key``): ``scaled_dist``
    (U,) float64, ``q_bits`` (W,) / ``u_bits`` (U, W) uint64 sign bits,
    ``step`` bins per differing bit (uint32), ``out`` (U,) uint32."""
    for u in range(scaled_dist.shape[0]):
        out[u] = _key(scaled_dist[u], q_bits, u_bits, u, step)
    return out


@_jit
def pack_words(qkey_u, inverse, d_class, q_class, d_bits, q_bits, unsorted, words):
    """Sort words ``qkey << 1 | relevance`` of every database item, into both
    ``unsorted`` and ``words`` (the one to sort): ``qkey_u`` (U,) quantised
    keys of the unique rows, ``inverse`` (N,) item -> unique row (empty:
    every row unique); relevance as in ``_relevant``."""
    one = np.uint32(1)
    has_inverse = inverse.shape[0] > 0
    for i in range(unsorted.shape[0]):
        key = qkey_u[inverse[i]] if has_inverse else qkey_u[i]
        unsorted[i] = words[i] = (key << one) | _relevant(i, d_class, q_class, d_bits, q_bits)


@_jit
def popcount_words(scaled_dist, sign_q, sign_u, step, d_class, q_class, d_bits, q_bits,
                   unsorted, words):
    """:func:`popcount_keys` and :func:`pack_words` in one pass, when every
    database row is unique (no key is needed twice)."""
    one = np.uint32(1)
    for i in range(unsorted.shape[0]):
        key = _key(scaled_dist[i], sign_q, sign_u, i, step)
        unsorted[i] = words[i] = (key << one) | _relevant(i, d_class, q_class, d_bits, q_bits)


@_jit
def mixed_runs(words, near, first, last):
    """Runs of close keys in sorted ``words`` that mix relevant and irrelevant
    items: maximal stretches of neighbours less than ``near`` apart in which
    some neighbours differ by an odd number (their relevance bits differ).
    Only these need repairing: the order inside any other run changes no
    metric.

    Writes the runs' first and last positions into ``first``/``last`` (each
    at least ``len(words) // 2`` long) and returns how many. Close
    neighbours are rare: blocks without any are skipped after one
    vectorised count.
    """
    n_runs = 0
    start = -1    # first position of the open run, if any
    end = -2      # last pair (i, i + 1) of the open run
    mixed = False
    n_pairs = words.shape[0] - 1
    for b in range(0, n_pairs, _BLOCK):
        # a fresh view indexed from 0 (with range(b, e), LLVM does not vectorise the count)
        block = words[b:min(b + _BLOCK, n_pairs) + 1]
        close = 0
        for i in range(block.shape[0] - 1):
            close += block[i + 1] - block[i] < near
        if close == 0:
            continue
        for i in range(block.shape[0] - 1):
            diff = block[i + 1] - block[i]
            if diff >= near:
                continue
            if b + i != end + 1:  # a new run: close the previous one
                if start >= 0 and mixed:
                    first[n_runs], last[n_runs] = start, end + 1
                    n_runs += 1
                start, mixed = b + i, False
            mixed |= (diff & 1) != 0
            end = b + i
    if start >= 0 and mixed:
        first[n_runs], last[n_runs] = start, end + 1
        n_runs += 1
    return n_runs


@_jit
def run_members(words, lo, hi, table, table_keys, items, run):
    """Items whose key (``words[i] >> 1``) lies in one of the disjoint,
    ascending ranges ``[lo[j], hi[j]]``: writes their index (ascending) and
    range into ``items``/``run`` and returns how many.

    Ranges spanning at most ``table_keys`` keys in all are screened by the
    low 16 bits of the key in ``table``, a bit set of 65,536 bits (8 KB: it
    stays in L1, where a byte table of 64 KB would not; all 0 on entry and
    on return); otherwise every item is binary-searched.
    """
    n_runs = lo.shape[0]
    span = 0
    for j in range(n_runs):
        span += hi[j] - lo[j] + 1
    screen = span <= table_keys
    if screen:
        for j in range(n_runs):
            for key in range(lo[j], hi[j] + 1):
                low = key & 0xFFFF
                table[low >> 3] |= np.uint8(1 << (low & 7))
    count = 0
    for i in range(words.shape[0]):
        key = words[i] >> 1
        low = key & 0xFFFF
        if screen and not (table[low >> 3] >> (low & 7)) & 1:
            continue
        j = _count_at_most(lo, key) - 1
        if j >= 0 and key <= hi[j]:
            items[count], run[count] = i, j
            count += 1
    if screen:
        for j in range(n_runs):
            for key in range(lo[j], hi[j] + 1):
                table[(key & 0xFFFF) >> 3] = 0
    return count


@njit(inline="always")
def _block_sum(a, start, n):
    """NumPy's ``pairwise_sum`` of float64 for n <= 128: a plain loop below 8
    items, else 8 accumulators combined as a tree, then the remainder."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[start + i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[start + i]
        r1 += a[start + i + 1]
        r2 += a[start + i + 2]
        r3 += a[start + i + 3]
        r4 += a[start + i + 4]
        r5 += a[start + i + 5]
        r6 += a[start + i + 6]
        r7 += a[start + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@_jit
def _pairwise_sum(a, n):
    """Sum of ``a[:n]`` in exactly NumPy's order (``pairwise_sum``: blocks of
    up to 128 items, halved at multiples of 8 above), so ``np.sum(x,
    axis=-1)`` of a contiguous row is reproduced bit for bit (tests check it
    against NumPy). NumPy recurses; this walks the same tree with a stack
    (Numba's cache cannot hold recursive functions)."""
    if n <= 128:
        return _block_sum(a, 0, n)
    depth = 64
    at = np.empty(depth, dtype=np.int64)      # each frame: first item,
    size = np.empty(depth, dtype=np.int64)    # item count,
    phase = np.empty(depth, dtype=np.int64)   # 0: left half next, 1: right half, 2: done
    left = np.empty(depth)                    # and its left half's sum
    top, at[0], size[0], phase[0] = 0, 0, n, 0
    result = 0.0
    while top >= 0:
        m = size[top]
        if m <= 128:
            result = _block_sum(a, at[top], m)
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if phase[top] == 0:
            phase[top] = 1
            at[top + 1], size[top + 1], phase[top + 1] = at[top], half, 0
            top += 1
        elif phase[top] == 1:
            left[top] = result
            phase[top] = 2
            at[top + 1], size[top + 1], phase[top + 1] = at[top] + half, m - half, 0
            top += 1
        else:
            result = left[top] + result
            top -= 1
    return result


@_jit
def exact_keys(q, u_norm, rows, out):
    """The reference's own float64 key of unique rows ``rows`` against query
    ``q``: ``10·hamming + Σ(q - d)²``, hamming = ``(nbits - sign(d)·sign(q)) / 2``
    (exact: integers), the squares summed in NumPy's order; bit-identical
    to h2q's elementwise NumPy expression."""
    nbits = q.shape[0]
    squares = np.empty(nbits)
    for k in range(rows.shape[0]):
        d = u_norm[rows[k]]
        dot = 0.0
        for j in range(nbits):
            dot += np.sign(d[j]) * np.sign(q[j])
            diff = d[j] - q[j]
            squares[j] = diff * diff
        out[k] = 10.0 * (0.5 * (nbits - dot)) + _pairwise_sum(squares, nbits)
    return out


@_jit
def _order_by_key(keys, members, scratch):
    """Sort ``members`` (indices into ``keys``, ascending) by key, ties kept in
    place (so by database index), in place; ``scratch``: as long as ``members``.

    Runs are usually 2-3 items (insertion sort); heavy ties (collapsed codes,
    duplicated images) make runs of thousands, hence a merge sort above 16.
    """
    n = members.shape[0]
    if n <= 16:
        for i in range(1, n):
            m = members[i]
            j = i - 1
            while j >= 0 and keys[members[j]] > keys[m]:
                members[j + 1] = members[j]
                j -= 1
            members[j + 1] = m
        return
    src, dst = members, scratch[:n]
    width, passes = 1, 0
    while width < n:
        for lo in range(0, n, 2 * width):
            mid, hi = min(lo + width, n), min(lo + 2 * width, n)
            i, j = lo, mid
            for k in range(lo, hi):
                if j < hi and (i >= mid or keys[src[j]] < keys[src[i]]):
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
        src, dst = dst, src
        width, passes = 2 * width, passes + 1
    if passes % 2:  # the last pass wrote into scratch
        members[:] = scratch[:n]


@_jit
def repair_relevance(words, unsorted, near, q, u_norm, inverse, table, table_keys,
                     first, last, items, run):
    """Give the runs of close keys in sorted 32-bit ``words`` that mix relevant
    and irrelevant items (:func:`mixed_runs`) their relevance bits in the
    reference's order: (exact key, database index). Returns how many runs.

    ``unsorted``: the same words by database index. A run holds exactly the
    items whose keys lie between its first and last key (the words are
    sorted and the run's neighbours are two bins away or more), found by
    :func:`run_members`; ``inverse`` maps items to unique rows (empty: the
    same). ``first``/``last``: scratch of ``len(words) // 2 + 1``,
    ``items``/``run``: of ``len(words)``.
    """
    n_runs = mixed_runs(words, near, first, last)
    if n_runs == 0:
        return 0
    lo = np.empty(n_runs, dtype=np.uint32)
    hi = np.empty(n_runs, dtype=np.uint32)
    for j in range(n_runs):
        lo[j] = words[first[j]] >> 1
        hi[j] = words[last[j]] >> 1
    count = run_members(unsorted, lo, hi, table, table_keys, items, run)
    rows = items[:count].copy()
    if inverse.shape[0] > 0:
        for k in range(count):
            rows[k] = inverse[rows[k]]
    keys = exact_keys(q, u_norm, rows, np.empty(count))
    # members grouped by run (a stable counting sort: ascending index within each)
    start = np.zeros(n_runs + 1, dtype=np.int64)
    for k in range(count):
        start[run[k] + 1] += 1
    for j in range(n_runs):
        start[j + 1] += start[j]
    fill = start[:n_runs].copy()
    grouped = np.empty(count, dtype=np.int64)
    scratch = np.empty(count, dtype=np.int64)
    for k in range(count):
        grouped[fill[run[k]]] = k
        fill[run[k]] += 1
    one = np.uint32(1)
    for j in range(n_runs):
        members = grouped[start[j]:start[j + 1]]
        if members.shape[0] != last[j] - first[j] + 1:
            raise AssertionError("a run's members do not match its length")
        _order_by_key(keys, members, scratch)
        for t in range(members.shape[0]):
            pos = first[j] + t
            words[pos] = (words[pos] & ~one) | (unsorted[items[members[t]]] & one)
    return n_runs


@_jit
def row_ap(words, lengths, found, ap, n_rel):
    """AP and relevant count of one ranked row at each cutoff ``lengths[j]``.

    ``words``: sorted words whose low bit is the relevance, the whole list
    or a prefix at least as long as every length; ``found``: an int64
    scratch of ``len(words)``. AP = (1/R) Σ i / pos_i over the R relevant
    items within the cutoff. The terms are summed in blocks of 8 (plain) and
    the block sums compensated (Neumaier), the last partial block plainly:
    each cutoff's value depends only on its own count, so the full list and
    any prefix give bit-identical values.
    """
    n_cut = lengths.shape[0]
    reach = 0
    for j in range(n_cut):
        reach = max(reach, lengths[j])
    n_found = 0
    for pos in range(reach):  # positions of the relevant items (branch-free compaction)
        found[n_found] = pos
        n_found += words[pos] & 1
    order = np.empty(n_cut, dtype=np.int64)
    for j in range(n_cut):  # relevant items before each cutoff; cutoffs by that count
        n_rel[j] = _count_at_most(found[:n_found], lengths[j] - 1)
        k = j
        while k > 0 and n_rel[order[k - 1]] > n_rel[j]:
            order[k] = order[k - 1]
            k -= 1
        order[k] = j
    total = 0.0
    comp = 0.0
    done = 0  # terms in total
    for jj in range(n_cut):
        j = order[jj]
        count = n_rel[j]
        while done + 8 <= count:
            block = 0.0
            for i in range(done, done + 8):
                block += (i + 1.0) / (found[i] + 1.0)
            t = total + block
            if abs(total) >= abs(block):
                comp += (total - t) + block
            else:
                comp += (block - t) + total
            total = t
            done += 8
        rest = 0.0
        for i in range(done, count):
            rest += (i + 1.0) / (found[i] + 1.0)
        ap[j] = ((total + comp) + rest) / count if count else 0.0
