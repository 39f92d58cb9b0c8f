"""biohash.metrics against a per-query float64 reference written from h2q's definition
(``src/utils/eval_utils.py``: ``mAP_at_many``, ``calc_hammingDist``), ties included."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from biohash.errors import ConfigError, DataError
from biohash.metrics import (
    evaluate_retrieval,
    headline_key,
    metric_name,
    retrieval_map,
    validation_map,
)


# ----------------------------------------------------------------- reference (oracle)
def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1.0), 0.0)


def reference_ranking(qf, df, ql, dl):
    """Yield (relevance in ranked order, hamming in ranked order) per query."""
    qn, dn = _normalise(qf), _normalise(df)
    qc, dc = np.sign(qn).astype(int), np.sign(dn).astype(int)
    nbits = qc.shape[1]
    for i in range(len(qn)):
        ham = 0.5 * (nbits - dc @ qc[i])  # h2q's calc_hammingDist: a 0 bit counts 1/2
        dist = np.sum((dn - qn[i]) ** 2, axis=1)
        key = 10 * ham + dist
        order = np.argsort(key, kind="stable")
        rel = (np.asarray(dl, np.float64) @ np.asarray(ql[i], np.float64)) > 0
        yield rel[order], ham[order]


def reference_ap(rel_sorted: np.ndarray, cutoff: int) -> float:
    rel = rel_sorted[:cutoff]
    positions = np.flatnonzero(rel) + 1
    if len(positions) == 0:
        return 0.0
    return float(np.mean(np.arange(1, len(positions) + 1) / positions))


def reference_metrics(qf, df, ql, dl, ks, radii, pks) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for rel, ham in reference_ranking(qf, df, ql, dl):
        n = len(rel)
        out.setdefault("mAP", []).append(reference_ap(rel, n))
        for k in ks:
            out.setdefault(f"mAP_at_k={k}", []).append(reference_ap(rel, k))
        for h in radii:
            out.setdefault(f"mAP_at_h={h}", []).append(reference_ap(rel, int(np.sum(ham <= h))))
        for k in pks:
            out.setdefault(f"P_at_k={k}", []).append(rel[:k].sum() / min(k, n))
    return {key: float(np.mean(v)) for key, v in out.items()}


# ----------------------------------------------------------------- data
def tied_data(seed: int, n_q: int = 40, n_db: int = 300, nbits: int = 8, n_labels: int = 5,
              multi: bool = True):
    """Few bits (Hamming ties everywhere), duplicated rows, zero components,
    queries without any relevant item."""
    rng = np.random.default_rng(seed)
    df = rng.standard_normal((n_db, nbits)).astype(np.float32)
    dup = rng.integers(0, n_db, size=n_db // 3)
    df[rng.integers(0, n_db, size=n_db // 3)] = df[dup]  # exact duplicate features
    df[rng.integers(0, n_db, size=10)] *= 3.0  # same direction, other norm
    qf = rng.standard_normal((n_q, nbits)).astype(np.float32)
    qf[:5] = df[:5]  # queries that are database items
    df[:7, 0] = 0.0  # sign(0) = 0 bits
    qf[5:8, 1] = 0.0
    if multi:
        dl = (rng.random((n_db, n_labels)) < 0.3).astype(np.int64)
        ql = (rng.random((n_q, n_labels)) < 0.3).astype(np.float32)
        dl[:, -1] = 0
        ql[:3] = 0
        ql[3, :] = 0
        ql[3, -1] = 1  # a label no database item has: no relevant item
    else:
        dl = np.eye(n_labels)[rng.integers(0, n_labels, n_db)]
        ql = np.eye(n_labels)[rng.integers(0, n_labels, n_q)]
    return qf, df, ql, dl


KS, RADII, PKS = (1, 7, 50, 299, 300, 1000), (0, 1, 2, 3), (1, 10, 100, 500)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("multi", [True, False])
def test_evaluate_matches_reference(seed: int, multi: bool) -> None:
    data = tied_data(seed, multi=multi)
    got = evaluate_retrieval(*data, ks=KS, radii=RADII, precision_ks=PKS)
    want = reference_metrics(*data, KS, RADII, PKS)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert 0.0 < got["mAP"] < 1.0


def test_small_chunks_and_larger_codes_match_reference() -> None:
    data = tied_data(3, n_q=25, n_db=400, nbits=48)
    want = reference_metrics(*data, (10, 100), (0, 5), (10,))
    got = evaluate_retrieval(*data, ks=(10, 100), radii=(0, 5), precision_ks=(10,),
                             memory_budget=1)  # one query per chunk
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("cut", [{}, {"k": 1}, {"k": 13}, {"k": 10_000}, {"radius": 0},
                                 {"radius": 2}, {"radius": 8}])
def test_retrieval_map_each_cutoff(cut: dict) -> None:
    data = tied_data(4)
    ks = (cut["k"],) if "k" in cut else ()
    radii = (cut["radius"],) if "radius" in cut else ()
    want = reference_metrics(*data, ks, radii, ())
    key = f"mAP_at_k={cut['k']}" if ks else f"mAP_at_h={cut['radius']}" if radii else "mAP"
    assert retrieval_map(*data, **cut) == pytest.approx(want[key], abs=1e-9)


def test_hand_computed_example() -> None:
    # 1-D codes: db items at +, -, + ; query +; labels make items 0 and 1 relevant.
    qf = np.array([[1.0, 1.0]])
    df = np.array([[1.0, 0.9], [-1.0, -1.0], [1.0, 1.0]])
    ql = np.array([[1, 0]])
    dl = np.array([[1, 0], [1, 1], [0, 1]])
    # ranking: item 2 (distance 0), item 0, item 1 -> relevant at positions 2, 3
    assert retrieval_map(qf, df, ql, dl) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert retrieval_map(qf, df, ql, dl, k=2) == pytest.approx(1 / 2)
    assert retrieval_map(qf, df, ql, dl, radius=0) == pytest.approx(1 / 2)
    res = evaluate_retrieval(qf, df, ql, dl, ks=(1,), radii=(), precision_ks=(2, 5))
    assert res["mAP_at_k=1"] == 0.0
    assert res["P_at_k=2"] == pytest.approx(0.5)
    assert res["P_at_k=5"] == pytest.approx(2 / 3)  # cutoff = whole database


def test_default_keys() -> None:
    res = evaluate_retrieval(*tied_data(5))
    assert list(res) == ["mAP", "mAP_at_k=1000", "mAP_at_k=5000", "mAP_at_h=0", "mAP_at_h=1",
                         "mAP_at_h=2", "P_at_k=100", "P_at_k=1000"]


def test_metric_names_and_headline() -> None:
    assert metric_name("mAP") == "mAP"
    assert metric_name("mAP_at_k=1000") == "mAP_at_1000"
    assert metric_name("mAP_at_h=0") == "mAP_at_h0"
    assert metric_name("P_at_k=100") == "P_at_100"
    with pytest.raises(ConfigError, match="unknown metric key 'recall'"):
        metric_name("recall")
    assert headline_key("ImageNet") == "mAP_at_k=1000"
    assert headline_key("NUS_WIDE") == "mAP_at_k=5000"


@pytest.mark.parametrize("change, match", [
    (lambda a: (a[0][:, :4], *a[1:]), "same code length"),
    (lambda a: (*a[:2], a[2][:, :3], a[3]), "same label width"),
    (lambda a: (a[0][:0], *a[1:]), "query_features is empty"),
    (lambda a: (a[0], a[1], a[2][:-1], a[3]), "query_labels has 39 rows"),
    (lambda a: (a[0].ravel(), *a[1:]), "2-D array"),
    (lambda a: (*a[:3], a[3] * 2), "0/1"),
])
def test_shape_errors(change, match) -> None:
    with pytest.raises(ConfigError, match=match):
        retrieval_map(*change(tied_data(0)))


@pytest.mark.parametrize("kw, match", [({"k": 0}, "k must be an integer >= 1; got 0"),
                                       ({"k": -3}, "k must be an integer >= 1; got -3"),
                                       ({"k": 2.5}, "k must be an integer >= 1; got 2.5"),
                                       ({"k": True}, "k must be an integer >= 1; got True"),
                                       ({"k": "10"}, "k must be an integer >= 1; got '10'"),
                                       ({"radius": -1}, "radius must be an integer >= 0"),
                                       ({"radius": 1.0}, "radius must be an integer >= 0"),
                                       ({"k": 5, "radius": 1}, "not both")])
def test_argument_errors(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        retrieval_map(*tied_data(0), **kw)


def test_non_finite_features() -> None:
    qf, df, ql, dl = tied_data(0)
    df[3, 2] = np.nan
    with pytest.raises(DataError, match="db_features contain NaN"):
        evaluate_retrieval(qf, df, ql, dl)
    assert validation_map(df, dl) == 0.0


@pytest.mark.parametrize("full_map", [True, False])
def test_coarse_quantisation_still_exact(monkeypatch, full_map: bool) -> None:
    """Force many equal quantised keys: the run repair must restore the exact order."""
    from biohash.metrics import _ranking
    monkeypatch.setattr(_ranking.Packing, "scale", property(lambda self: 64.0))
    data = tied_data(7, n_q=30, n_db=500, nbits=16)
    want = reference_metrics(*data, (10, 100), (0, 2), (10,))
    got = evaluate_retrieval(*data, ks=(10, 100), radii=(0, 2), precision_ks=(10,),
                             full_map=full_map)
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


@pytest.mark.parametrize("table_keys", [0, 1 << 12])
def test_mixed_runs_are_found_with_and_without_the_key_table(monkeypatch, table_keys: int) -> None:
    """The full sort's 32-bit words carry no index: runs of close keys mixing relevant and
    irrelevant items are found by key, screened by a table or (long runs) checked item
    by item; both must give the reference's values."""
    from biohash.metrics import _ranking
    monkeypatch.setattr(_ranking, "_TABLE_KEYS", table_keys)
    data = tied_data(11, n_q=30, n_db=600, nbits=8)
    want = reference_metrics(*data, (10, 100), (0, 2), (10,))
    got = evaluate_retrieval(*data, ks=(10, 100), radii=(0, 2), precision_ks=(10,))
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


@pytest.mark.parametrize("nbits", [1, 7, 8, 12, 16, 48, 64, 100, 128, 129, 256, 1000])
def test_exact_keys_are_numpys_own_arithmetic(nbits: int) -> None:
    """The run repair orders by the reference's float64 key; the compiled version must
    round exactly as h2q's NumPy expression (its pairwise summation order included),
    on keys whose squares span many magnitudes and codes with 0 bits."""
    from biohash.metrics import _kernels
    rng = np.random.default_rng(nbits)
    q = rng.standard_normal(nbits) * np.exp(3 * rng.standard_normal(nbits))
    d = rng.standard_normal((300, nbits)) * np.exp(3 * rng.standard_normal((300, nbits)))
    d[rng.random(d.shape) < 0.1] = 0.0
    q[: nbits // 4] = 0.0
    want = 10 * (0.5 * (nbits - np.sign(d) @ np.sign(q))) + np.sum((d - q) ** 2, axis=1)
    rows = rng.permutation(300)[:200]
    got = _kernels.exact_keys(q, d, rows, np.empty(len(rows)))
    assert np.array_equal(got, want[rows])


@pytest.mark.parametrize("nbits,n_labels,multi", [(16, 5, True), (16, 7, False),
                                                  (100, 70, True)])
def test_unique_rows_take_the_one_pass_words(monkeypatch, nbits: int, n_labels: int,
                                             multi: bool) -> None:
    """Continuous features (every database row unique, no 0 bit): keys, relevance and
    sort words come from one compiled pass; it must give the reference's values."""
    from biohash.metrics import _kernels
    calls = []
    one_pass = _kernels.popcount_words
    monkeypatch.setattr(_kernels, "popcount_words", lambda *a: calls.append(1) or one_pass(*a))
    rng = np.random.default_rng(nbits + n_labels)
    qf, df = rng.standard_normal((25, nbits)), rng.standard_normal((900, nbits))
    if multi:
        ql, dl = (rng.random((25, n_labels)) < 0.2), (rng.random((900, n_labels)) < 0.2)
    else:
        ql = np.eye(n_labels)[rng.integers(0, n_labels, 25)]
        dl = np.eye(n_labels)[rng.integers(0, n_labels, 900)]
    df[:, 0] = np.sign(df[:, 0]) * (np.round(np.abs(df[:, 0]), 1) + 0.1)  # near ties, no 0 bit
    want = reference_metrics(qf, df, ql, dl, (10, 300), (0, 2), (50,))
    got = evaluate_retrieval(qf, df, ql, dl, ks=(10, 300), radii=(0, 2), precision_ks=(50,))
    assert len(calls) == 25
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_long_mixed_runs_of_exact_ties() -> None:
    """Hundreds of database copies of a few rows, relevant and not: runs of exactly
    tied keys far longer than the insertion sort's reach, ordered by index."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((4, 16))
    df = base[rng.integers(0, 4, size=2000)] + np.where(
        rng.random((2000, 1)) < 0.1, rng.standard_normal((2000, 16)), 0.0)
    dl = (rng.random((2000, 3)) < 0.4).astype(np.int8)
    qf, ql = rng.standard_normal((12, 16)), (rng.random((12, 3)) < 0.5).astype(np.int8)
    qf[:4] = base
    want = reference_metrics(qf, df, ql, dl, (10, 500), (0, 3), (100,))
    got = evaluate_retrieval(qf, df, ql, dl, ks=(10, 500), radii=(0, 3), precision_ks=(100,))
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


# ----------------------------------------------------------------- zero bits (h2q's Hamming)
def test_zero_bits_count_half_as_in_h2q() -> None:
    """hamming = (nbits - q·d) / 2 on sign codes: a 0 bit counts 1/2 against anything."""
    qf = np.array([[1.0, 0.0]])                                  # code (+1, 0)
    df = np.array([[1.0, 1.0], [0.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    # codes (+,+) (0,0) (-,0) (+,0): hamming 0.5, 1.0, 1.0, 0.0; distances 2-√2, 1, 4, 0
    ql, dl = np.array([[1]]), np.array([[1], [1], [0], [0]])
    # ranking: item 3 (0), item 0 (5.59), item 1 (11), item 2 (14); relevant: items 0 and 1
    assert retrieval_map(qf, df, ql, dl, radius=0) == 0.0         # only item 3 within 0
    assert retrieval_map(qf, df, ql, dl, radius=1) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert retrieval_map(qf, df, ql, dl, k=2) == pytest.approx(1 / 2)
    res = evaluate_retrieval(qf, df, ql, dl, ks=(2,), radii=(0, 1), precision_ks=(3,))
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res["mAP_at_h=1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert res["mAP_at_h=0"] == 0.0


def zero_heavy_data(seed: int, n_q: int = 30, n_db: int = 400, nbits: int = 12):
    """Features whose components are often exactly 0 (so codes hold many 0 bits,
    half-integer Hamming distances and many exact key ties)."""
    rng = np.random.default_rng(seed)
    qf = rng.integers(-2, 3, size=(n_q, nbits)).astype(np.float32)
    df = rng.integers(-2, 3, size=(n_db, nbits)).astype(np.float32)
    df[:5] = 0.0  # all-zero rows: normalised to 0, code all 0 bits
    dl = (rng.random((n_db, 4)) < 0.4).astype(np.uint8)
    ql = (rng.random((n_q, 4)) < 0.4).astype(np.uint8)
    return qf, df, ql, dl


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_heavy_features_match_reference(seed: int) -> None:
    data = zero_heavy_data(seed)
    ks, radii, pks = (1, 20, 150, 400), (0, 1, 2, 3, 6), (5, 150)
    want = reference_metrics(*data, ks, radii, pks)
    for full_map in (True, False):
        got = evaluate_retrieval(*data, ks=ks, radii=radii, precision_ks=pks, full_map=full_map)
        for key in got:
            assert got[key] == pytest.approx(want[key], abs=1e-12), (full_map, key)


# ----------------------------------------------------------------- top-k by partial selection
CASES = [  # (data, ks, radii, precision ks): prefixes set by k, by a radius, or neither
    (lambda: tied_data(0), (1, 7, 50, 299), (0, 1, 2, 3), (1, 10, 100)),
    (lambda: tied_data(1, multi=False), (13,), (5,), ()),        # radius reaches past k
    (lambda: tied_data(2, nbits=48), (10, 100), (0, 2), (10,)),  # uint8 2·hamming, sparse
    (lambda: tied_data(3, nbits=200, n_db=150), (3, 149), (1, 60), (3,)),  # uint16 2·hamming
    (lambda: zero_heavy_data(2), (1, 5, 399), (0, 1), (17,)),
    (lambda: tied_data(5, n_labels=70), (9, 40), (1,), (9,)),   # labels in two 64-bit words
]


@functools.lru_cache(maxsize=None)
def _case_reference(case: int) -> dict[str, float]:
    make, ks, radii, pks = CASES[case]
    return reference_metrics(*make(), ks, radii, pks)


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("budget", [1, 2**28])  # one query per chunk / one chunk
def test_prefix_path_is_bit_identical_to_full_sort(case: int, budget: int) -> None:
    make, ks, radii, pks = CASES[case]
    data = make()
    full = evaluate_retrieval(*data, ks=ks, radii=radii, precision_ks=pks, memory_budget=budget)
    part = evaluate_retrieval(*data, ks=ks, radii=radii, precision_ks=pks, full_map=False,
                              memory_budget=budget)
    assert "mAP" not in part and set(full) == {"mAP", *part}
    assert {key: full[key] for key in part} == part  # exactly, not approximately
    want = _case_reference(case)
    for key in full:
        assert full[key] == pytest.approx(want[key], abs=1e-12), key
    if ks:
        assert retrieval_map(*data, k=ks[-1]) == part[f"mAP_at_k={ks[-1]}"]
    if radii:
        assert retrieval_map(*data, radius=radii[-1]) == part[f"mAP_at_h={radii[-1]}"]


def test_top_k_and_radius_never_sort_the_whole_database(monkeypatch) -> None:
    """Without the full-list mAP the full sort is not used; with it, it is."""
    from biohash.metrics import _ranking, retrieval

    def no_full_sort(*args, **kwargs):
        raise AssertionError("full sort used")

    data = tied_data(8, n_db=600)
    want = evaluate_retrieval(*data, ks=(5, 50), radii=(0, 2), precision_ks=(10,), full_map=False)
    prefix_sizes = []
    real_prefix = _ranking.rank_prefix

    def spy(*args, **kwargs):
        for words, counts in real_prefix(*args, **kwargs):
            prefix_sizes.append(len(words))
            yield words, counts

    monkeypatch.setattr(retrieval, "rank_rows", no_full_sort)
    monkeypatch.setattr(retrieval, "rank_prefix", spy)
    got = evaluate_retrieval(*data, ks=(5, 50), radii=(0, 2), precision_ks=(10,), full_map=False)
    assert got == want
    assert retrieval_map(*data, k=50) == want["mAP_at_k=50"]
    assert retrieval_map(*data, radius=2) == want["mAP_at_h=2"]
    assert len(prefix_sizes) == 3 * len(data[0]) and 50 <= max(prefix_sizes) < 600
    with pytest.raises(AssertionError, match="full sort used"):
        retrieval_map(*data)


def test_cutoffs_beyond_the_database_use_the_full_sort() -> None:
    data = tied_data(9)  # 300 database items, 8 bits
    want = reference_metrics(*data, (300, 1000), (8, 9), (1000,))
    got = evaluate_retrieval(*data, ks=(300, 1000), radii=(8, 9), precision_ks=(1000,),
                             full_map=False)
    for key in got:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert got["mAP_at_k=1000"] == got["mAP_at_h=8"] == pytest.approx(want["mAP"], abs=1e-12)


def test_nothing_to_compute_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nothing to compute"):
        evaluate_retrieval(*tied_data(0), ks=(), radii=(), precision_ks=(), full_map=False)
