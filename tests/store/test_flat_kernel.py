"""The fused flat-search kernel: hand-worked scores, brute force on awkward shapes, ties,
threads, the store's use of it, and FAISS serving where it cannot run."""

from __future__ import annotations

import os

import faiss
import numpy as np
import pytest

from fewshot_metric.store import PrototypeStore, flat_kernel

reason = flat_kernel.unavailable_reason()
if reason is not None and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the flat search kernel: {reason}")
needs_kernel = pytest.mark.skipif(reason is not None, reason=f"flat search kernel: {reason}")


@needs_kernel
def test_scores_and_distances_worked_by_hand():
    vectors = np.array([[0, 0], [1, 0], [0, 2], [3, 3]], np.float32)
    queries = np.array([[1, 0], [0, 1.5], [3, 2]], np.float32)
    # ||q - p||^2: query (1, 0) -> 1, 0, 5, 13; query (0, 1.5) -> 2.25, 3.25, 0.25, 11.25;
    # query (3, 2) -> 13, 8, 9, 1
    distances, positions = flat_kernel.flat_search(queries, vectors, 2, inner_product=False)
    assert positions.tolist() == [[1, 0], [2, 0], [3, 1]]
    np.testing.assert_array_equal(distances, [[0, 1], [0.25, 2.25], [1, 8]])
    products, positions = flat_kernel.flat_search(queries, vectors, 1, inner_product=True)
    assert positions[:, 0].tolist() == [3, 3, 3] and products[:, 0].tolist() == [3, 4.5, 15]


@needs_kernel
def test_more_asked_than_vectors_gives_minus_one_and_inf():
    vectors = np.array([[1, 1], [2, 2]], np.float32)
    distances, positions = flat_kernel.flat_search(np.zeros((1, 2), np.float32), vectors, 4,
                                                   inner_product=False)
    assert positions.tolist() == [[0, 1, -1, -1]]
    assert distances[0, :2].tolist() == [2, 8] and np.isinf(distances[0, 2:]).all()
    products, positions = flat_kernel.flat_search(np.ones((3, 2), np.float32),
                                                  np.zeros((0, 2), np.float32), 2, True)
    assert (positions == -1).all() and (products == -np.inf).all()


@needs_kernel
def test_ties_come_in_faiss_order():
    # 60 equal vectors across two blocks of 48: as in FAISS's flat search, the lowest
    # positions make the top-k, listed lowest first for squared L2, highest first for
    # inner product
    vectors = np.array([[5, 5]] + [[1, 0]] * 60 + [[0, 1]], np.float32)
    query = np.array([[1, 0]], np.float32)
    products, positions = flat_kernel.flat_search(query, vectors, 4, inner_product=True)
    assert positions.tolist() == [[0, 3, 2, 1]] and products.tolist() == [[5, 1, 1, 1]]
    distances, positions = flat_kernel.flat_search(query, vectors, 4, inner_product=False)
    assert positions.tolist() == [[1, 2, 3, 4]] and distances.tolist() == [[0, 0, 0, 0]]
    queries = np.array([[1, 0], [0, 1], [2, 2], [-1, 0]], np.float32)
    for index, inner_product in ((faiss.IndexFlatIP(2), True), (faiss.IndexFlatL2(2), False)):
        index.add(vectors)
        for k in (1, 3, 61, 70, 99):
            expected = index.search(queries, k)[1]
            assert (flat_kernel.flat_search(queries, vectors, k, inner_product)[1]
                    == expected).all(), (inner_product, k)


@needs_kernel
def test_an_outlier_stored_first_does_not_spoil_the_ranking():
    # squared L2 ranks around the stored vector nearest the mean, not around the first one
    rng = np.random.default_rng(9)
    vectors = rng.integers(-3, 4, size=(300, 8)).astype(np.float32)
    vectors[0] = 1e4
    queries = rng.integers(-3, 4, size=(64, 8)).astype(np.float32)
    index = faiss.IndexFlatL2(8)
    index.add(vectors)
    expected_distances, expected = index.search(queries, 5)
    distances, positions = flat_kernel.flat_search(queries, vectors, 5, inner_product=False)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_array_equal(distances, expected_distances)


@needs_kernel
def test_distances_far_from_the_origin_keep_their_precision():
    # float32 expansions ||q||^2 - 2 q.p + ||p||^2 at norm^2 ~ 640,000 round to ~0.06: the
    # kernel ranks on vectors shifted by a stored one and computes the k distances directly
    rng = np.random.default_rng(8)
    vectors = (100 + 0.1 * rng.normal(size=(500, 64))).astype(np.float32)
    queries = (vectors[:100] + 0.02 * rng.normal(size=(100, 64))).astype(np.float32)
    queries[:10] = vectors[:10]  # identical: distance exactly 0
    distances, positions = flat_kernel.flat_search(queries, vectors, 2, inner_product=False)
    exact = ((queries.astype(np.float64)[:, None] - vectors[None]) ** 2).sum(-1)
    assert (positions[:, 0] == np.arange(100)).all()
    assert (positions == np.argsort(exact, axis=1, kind="stable")[:, :2]).all()
    np.testing.assert_allclose(distances, np.take_along_axis(exact, positions, 1), rtol=1e-5)
    assert (distances[:10, 0] == 0).all()


@needs_kernel
@pytest.mark.parametrize("n, c, dim, k", [(1, 1, 1, 1), (13, 33, 7, 5), (250, 1000, 64, 1),
                                          (97, 70, 33, 10), (300, 257, 512, 3)])
@pytest.mark.parametrize("inner_product", [False, True])
def test_matches_float64_brute_force(n, c, dim, k, inner_product):
    rng = np.random.default_rng(n + c + dim)
    queries = rng.normal(size=(n, dim)).astype(np.float32)
    vectors = rng.normal(size=(c, dim)).astype(np.float32)
    q, p = queries.astype(np.float64), vectors.astype(np.float64)
    exact = q @ p.T if inner_product else ((q[:, None, :] - p[None]) ** 2).sum(-1)
    order = np.argsort(-exact if inner_product else exact, axis=1, kind="stable")[:, :k]
    raw, positions = flat_kernel.flat_search(queries, vectors, k, inner_product)
    kept = min(k, c)
    np.testing.assert_array_equal(positions[:, :kept], order)
    np.testing.assert_allclose(raw[:, :kept], np.take_along_axis(exact, order, 1),
                               rtol=1e-5, atol=1e-5 * dim)


def same_answers(queries, vectors, k, inner_product, counts=None, screen_cap=None):
    """Asserts the screened search equals the float32 kernel's to the bit."""
    screened = flat_kernel.flat_search(queries, vectors, k, inner_product, screen_cap, counts)
    plain = flat_kernel.flat_search(queries, vectors, k, inner_product, screen_cap=0)
    np.testing.assert_array_equal(screened[1], plain[1])
    np.testing.assert_array_equal(screened[0], plain[0])


def clustered(rng, n, c, dim, clusters=4):
    """Vectors around a few centres and queries near vectors: many vectors at nearly the
    same distance from a query, as in store_bench's data."""
    centres = rng.normal(size=(clusters, dim)) / np.sqrt(dim)
    vectors = centres[rng.integers(0, clusters, c)] + 0.5 * rng.normal(size=(c, dim)) / np.sqrt(dim)
    queries = vectors[rng.integers(0, c, n)] + 0.25 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return queries.astype(np.float32), vectors.astype(np.float32)


@needs_kernel
@pytest.mark.parametrize("n, c, dim, k", [(1, 1, 1, 1), (70, 5, 3, 9), (200, 1000, 64, 1),
                                          (131, 777, 37, 5), (64, 3000, 512, 3),
                                          (100, 400, 130, 99)])
@pytest.mark.parametrize("inner_product", [False, True])
def test_int8_screening_gives_the_float32_kernels_answers_to_the_bit(n, c, dim, k,
                                                                      inner_product):
    rng = np.random.default_rng(n * c + dim)
    same_answers(*clustered(rng, n, c, dim), k, inner_product)
    integers = rng.integers(-2, 3, size=(n + c, dim)).astype(np.float32)  # many exact ties
    same_answers(integers[:n], integers[n:], k, inner_product)


@needs_kernel
def test_screening_finds_the_best_vector_its_int8_scores_rank_second():
    # query (1, 0.003) rounds to codes (127, 0): its int8 products rank p1 = (1, 0) at 1.0
    # above p2 = (0.999, 0.5) at 0.999, but q . p2 = 0.999 + 0.0015 = 1.0005 > q . p1 = 1
    query = np.array([[1, 0.003]], np.float32)
    vectors = np.array([[1, 0], [0.999, 0.5]], np.float32)
    products, positions = flat_kernel.flat_search(query, vectors, 1, inner_product=True)
    assert positions.tolist() == [[1]]
    np.testing.assert_allclose(products, [[1.0005]], rtol=1e-6)
    # squared L2 the same way: ||q - p||^2 = ||q||^2 - 2 q.p + ||p||^2, equal norms for both
    vectors = np.array([[0.6, 0.8], [0.8, 0.6]], np.float32)
    query = np.array([[0.7, 0.70002]], np.float32)  # p1 by 2e-5 * 0.2
    distances, positions = flat_kernel.flat_search(query, vectors, 2, inner_product=False)
    assert positions.tolist() == [[0, 1]]


@needs_kernel
def test_overflowing_candidate_lists_go_to_a_second_pass_then_to_float32(monkeypatch):
    # vectors in groups of 5 blocks of 48: lists must last across groups (with one group, a
    # tile's lists hold every vector)
    monkeypatch.setattr(flat_kernel, "GROUP_BYTES", 256 * 48 * 5)
    rng = np.random.default_rng(12)
    queries, vectors = clustered(rng, 300, 2000, 256)
    counts = np.zeros(2, np.int64)
    same_answers(queries, vectors, 2, False, counts, screen_cap=1)  # no list holds two
    assert counts.tolist() == [300, 300]
    counts[:] = 0
    same_answers(queries, vectors, 1, False, counts, screen_cap=100)
    # lists overflow while the best vector so far is one of many at nearly its distance;
    # a second pass from the final bound keeps only the few near the best
    assert 0 < counts[0] < 300 and counts[1] == 0, counts
    counts[:] = 0
    same_answers(queries, vectors, 1, False, counts)
    assert counts.tolist() == [0, 0]  # the default list size holds them


@needs_kernel
def test_where_screening_does_not_pay_it_stops_after_probing():
    # 200 vectors in one cluster, k=5: many vectors lie within the int8 rounding of a
    # query's fifth nearest, and scoring them all costs more than the 200 float32 products
    # they save; after the first 256 queries (PROBE in flat_topk.c) the rest go to float32
    rng = np.random.default_rng(16)
    queries, vectors = clustered(rng, 1000, 200, 64, clusters=1)
    threads = faiss.omp_get_max_threads()
    counts = np.zeros(2, np.int64)
    try:
        faiss.omp_set_num_threads(1)
        same_answers(queries, vectors, 5, False, counts)
        assert counts.tolist() == [0, 1000 - 256]
        counts[:] = 0  # a thousand classes in four clusters at D=512, k=1: screening pays
        same_answers(*clustered(rng, 1000, 1000, 512), 1, False, counts)
        assert counts.tolist() == [0, 0]
    finally:
        faiss.omp_set_num_threads(threads)


@needs_kernel
def test_huge_or_non_finite_values_are_searched_in_float32():
    rng = np.random.default_rng(13)
    queries, vectors = clustered(rng, 100, 500, 16)
    vectors[7] = 1e30  # products near float32's largest number: no int8 bound
    counts = np.zeros(2, np.int64)
    same_answers(queries, vectors, 3, True, counts)
    assert counts.tolist() == [0, 100]
    for bad in (np.nan, np.inf):  # no bound either (and no ranking from made-up codes)
        vectors[7, 3] = bad
        counts[:] = 0
        same_answers(queries, vectors, 3, True, counts)
        assert counts.tolist() == [0, 100]


@needs_kernel
@pytest.mark.parametrize("inner_product", [False, True])
def test_products_below_float32s_normal_range_keep_the_answers(inner_product):
    # products near 1e-46: float32 rounds them by an absolute 2^-150, not relatively
    rng = np.random.default_rng(15)
    queries, vectors = rng.normal(size=(64, 16)), rng.normal(size=(200, 16))
    for query_scale, vector_scale in ((1e-23, 1e-23), (1e-32, 1e-14)):
        same_answers((queries * query_scale).astype(np.float32),
                     (vectors * vector_scale).astype(np.float32), 1, inner_product)


@needs_kernel
def test_groups_and_chunks_do_not_change_screened_answers(monkeypatch):
    rng = np.random.default_rng(14)
    queries, vectors = clustered(rng, 203, 1500, 20)
    whole = flat_kernel.flat_search(queries, vectors, 4, inner_product=False)
    monkeypatch.setattr(flat_kernel, "CHUNK_BYTES", 40_000)  # several chunks of queries
    monkeypatch.setattr(flat_kernel, "GROUP_BYTES", 20 * 48 * 3)  # 3 blocks of 48 per group
    parts = flat_kernel.flat_search(queries, vectors, 4, inner_product=False)
    np.testing.assert_array_equal(whole[1], parts[1])
    np.testing.assert_array_equal(whole[0], parts[0])


@needs_kernel
def test_threads_split_queries_without_changing_answers():
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(500, 24)).astype(np.float32)
    vectors = rng.normal(size=(3000, 24)).astype(np.float32)
    threads = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = flat_kernel.flat_search(queries, vectors, 4, inner_product=False)
        faiss.omp_set_num_threads(3)  # 3 slices even on fewer cores
        three = flat_kernel.flat_search(queries, vectors, 4, inner_product=False)
    finally:
        faiss.omp_set_num_threads(threads)
    np.testing.assert_array_equal(one[1], three[1])
    np.testing.assert_array_equal(one[0], three[0])


@needs_kernel
def test_query_chunks_and_vector_groups_do_not_change_answers(monkeypatch):
    rng = np.random.default_rng(6)
    queries = rng.normal(size=(203, 20)).astype(np.float32)
    vectors = rng.normal(size=(1000, 20)).astype(np.float32)
    whole = flat_kernel.flat_search(queries, vectors, 7, inner_product=False)
    monkeypatch.setattr(flat_kernel, "CHUNK_BYTES", 20 * 4 * 20)  # 16 queries (tiles of 8)
    monkeypatch.setattr(flat_kernel, "GROUP_BYTES", 20 * 4 * 48 * 3)  # 3 blocks of 48
    parts = flat_kernel.flat_search(queries, vectors, 7, inner_product=False)
    np.testing.assert_array_equal(whole[1], parts[1])
    np.testing.assert_array_equal(whole[0], parts[0])


@needs_kernel
def test_refuses_arrays_it_cannot_read():
    good = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="queries must be a C-contiguous float32"):
        flat_kernel.flat_search(good.astype(np.float64), good, 1, inner_product=False)
    with pytest.raises(ValueError, match="vectors must be a C-contiguous float32"):
        flat_kernel.flat_search(good, np.asfortranarray(np.zeros((3, 3), np.float32)), 1, False)
    with pytest.raises(ValueError, match="same D"):
        flat_kernel.flat_search(good, np.zeros((2, 4), np.float32), 1, inner_product=False)


def store_with_gaps(metric: str, kind: str = "flat") -> tuple[PrototypeStore, np.ndarray]:
    """A store of 300 classes after removing every third (ids no longer 0..N-1), and 200
    queries."""
    rng = np.random.default_rng(11)
    store = PrototypeStore(16, metric=metric, index=kind)
    store.add(rng.normal(size=(300, 16)).astype(np.float32), [f"c{i}" for i in range(300)])
    for i in range(0, 300, 3):
        store.remove(f"c{i}")
    return store, rng.normal(size=(200, 16)).astype(np.float32)


@needs_kernel
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("kind", ["flat", "ivf_flat"])  # ivf_flat: its exact stand-in
def test_store_search_runs_the_kernel_and_matches_faiss(monkeypatch, metric, kind):
    store, queries = store_with_gaps(metric, kind)
    calls = []
    search = flat_kernel.flat_search
    monkeypatch.setattr(flat_kernel, "flat_search", lambda *a, **kw: calls.append(1) or
                        search(*a, **kw))
    fused = store.search(queries, k=5)
    assert calls, "the store did not search with the kernel"
    monkeypatch.setattr(flat_kernel, "serves", lambda n_queries, k: False)
    plain = store.search(queries, k=5)
    assert fused.labels == plain.labels
    np.testing.assert_array_equal(fused.ids, plain.ids)
    np.testing.assert_allclose(fused.distances, plain.distances, rtol=1e-5, atol=1e-5)


def test_store_falls_back_to_faiss_where_the_kernel_cannot_run(monkeypatch):
    store, queries = store_with_gaps("sqeuclidean")
    expected = store.search(queries, k=3)
    monkeypatch.setattr(flat_kernel, "_library", lambda: (None, "this CPU has no AVX-512"))
    assert flat_kernel.unavailable_reason() == "this CPU has no AVX-512"
    assert not flat_kernel.serves(1000, 1)
    with pytest.raises(RuntimeError, match="cannot run: this CPU has no AVX-512"):
        flat_kernel.flat_search(queries, queries, 1, inner_product=False)
    result = store.search(queries, k=3)
    assert result.labels == expected.labels
    np.testing.assert_allclose(result.distances, expected.distances, rtol=1e-5, atol=1e-5)


def test_screens_where_the_cpu_has_avx512_vnni():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    with open("/proc/cpuinfo") as cpuinfo:
        vnni = " avx512_vnni" in cpuinfo.read()
    assert flat_kernel.screens() is (reason is None and vnni)


def test_serves_batches_and_k_below_faiss_reservoir():
    runs = reason is None
    assert faiss.cvar.distance_compute_min_k_reservoir == 100  # FAISS 1.15's default
    assert flat_kernel.serves(flat_kernel.MIN_QUERIES, 99) is runs
    assert not flat_kernel.serves(flat_kernel.MIN_QUERIES - 1, 1)
    assert not flat_kernel.serves(1000, 100)  # FAISS's reservoir orders ties otherwise
