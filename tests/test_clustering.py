import hashlib
import subprocess
import sys

import numpy as np
import pytest

from as3l_plugin.clustering import assign, kmeans, kmeans_plusplus, knn, pairwise_sqdist
from as3l_plugin.errors import InputError, ParameterError


def _mixture(n=3000, d=16, k=6, seed=0, scale=6.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=scale, size=(k, d))
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_kmeans_recovers_blobs_and_types(blobs, backend):
    X, y = blobs
    r = kmeans(X, 4, seed=0, backend=backend)
    assert r.centers.dtype == np.float32 and r.centers.shape == (4, 8)
    assert r.labels.dtype == np.int64 and r.labels.shape == (400,)
    assert isinstance(r.inertia, float) and isinstance(r.n_iter, int)
    # every blob maps to exactly one cluster
    for c in range(4):
        assert np.unique(r.labels[y == c]).size == 1
    assert np.unique(r.labels).size == 4


@pytest.mark.parametrize("K", [5, 12])
def test_kmeans_inertia_close_to_sklearn(K):
    from sklearn.cluster import KMeans
    X, _ = _mixture(n=2000, d=10, k=6, seed=1, scale=3.0)
    ours = min(kmeans(X, K, seed=s, max_iter=100).inertia for s in range(3))
    ref = KMeans(K, n_init=3, random_state=0).fit(X).inertia_
    assert ours <= ref * 1.03
    # inertia is the real sum of squared distances to the returned centres
    r = kmeans(X, K, seed=0)
    exact = ((X.astype(np.float64) - r.centers[r.labels]) ** 2).sum()
    assert r.inertia == pytest.approx(exact, rel=1e-4)


def test_kmeans_labels_are_nearest_centre():
    X, _ = _mixture()
    r = kmeans(X, 9, seed=2)
    D = ((X[:, None, :].astype(np.float64) - r.centers[None]) ** 2).sum(-1)
    gap = D[np.arange(len(X)), r.labels] - D.min(1)
    assert gap.max() <= 1e-3 * D.max()


def test_kmeans_deterministic_per_seed_and_seed_matters():
    X, _ = _mixture(n=4000, d=32, k=8, seed=3, scale=1.0)
    a = kmeans(X, 20, seed=7)
    b = kmeans(X.copy(), 20, seed=7)
    assert a.labels.tobytes() == b.labels.tobytes()
    assert a.centers.tobytes() == b.centers.tobytes()
    assert a.inertia == b.inertia
    c = kmeans(X, 20, seed=8)
    assert c.labels.tobytes() != a.labels.tobytes()


_SCRIPT = """
import hashlib, sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from as3l_plugin.clustering import kmeans, knn
rng = np.random.default_rng(1)
X = rng.normal(size=(6000, 48)).astype(np.float32)
f = np.full(6000, -1); f[:30] = np.arange(30) % 17
r = kmeans(X, 17, seed=3, max_iter=15)
r2 = kmeans(X, 17, seed=3, fixed_labels=f, max_iter=15)
d, i = knn(X[:1500], 7)
h = hashlib.sha256(r.labels.tobytes() + r.centers.tobytes() + r2.labels.tobytes()
                   + i.tobytes() + d.tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_byte_identical_across_processes_and_thread_counts():
    outs = [subprocess.run([sys.executable, "-c", _SCRIPT, str(t)], capture_output=True,
                           text=True, check=True).stdout.strip() for t in (1, 2, 1)]
    assert len(outs[0]) == 64
    assert outs[0] == outs[1] == outs[2]


def test_constrained_kmeans_keeps_fixed_labels():
    X, y = _mixture(n=1500, d=8, k=5, seed=4)
    fixed = np.full(len(X), -1, dtype=np.int64)
    # put some samples in a "wrong" cluster on purpose: they must stay there
    fixed[:10] = np.arange(10) % 7
    r = kmeans(X, 7, seed=0, fixed_labels=fixed)
    assert np.array_equal(r.labels[:10], fixed[:10])
    # seeded init: clusters start at their seeds' means -> init given explicitly works too
    init = np.stack([X[fixed == c].mean(0) for c in range(7)]).astype(np.float32)
    r2 = kmeans(X, 7, init=init, fixed_labels=fixed)
    assert np.array_equal(r2.labels[:10], fixed[:10])
    assert np.unique(r2.labels).size == 7


def test_empty_clusters_are_reseeded_deterministically():
    X, _ = _mixture(n=600, d=4, k=3, seed=5)
    init = np.repeat(X[:1], 6, axis=0)  # identical centres -> 5 empty clusters at step 1
    r = kmeans(X, 6, init=init)
    assert np.unique(r.labels).size == 6
    r2 = kmeans(X, 6, init=init)
    assert r.labels.tobytes() == r2.labels.tobytes()


def test_duplicate_points_and_k_equals_n():
    X = np.zeros((5, 3), dtype=np.float32)
    r = kmeans(X, 5, seed=0)
    assert sorted(r.labels.tolist()) == [0, 1, 2, 3, 4]
    assert r.inertia == 0.0


def test_assign_matches_bruteforce_and_chunking():
    X, _ = _mixture(n=700, d=5, k=4, seed=6)
    C = X[::50].copy()
    lab, sq = assign(X, C)
    D = pairwise_sqdist(X, C)
    assert np.array_equal(lab, D.argmin(1))
    np.testing.assert_allclose(sq, D.min(1), rtol=1e-4, atol=1e-3)
    assert lab.dtype == np.int64 and sq.dtype == np.float32


def test_knn_excludes_self_and_matches_bruteforce():
    X, _ = _mixture(n=300, d=6, k=3, seed=7)
    dist, idx = knn(X, 5, chunk=64)
    assert idx.shape == (300, 5) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert not (idx == np.arange(300)[:, None]).any()
    D = pairwise_sqdist(X, X).astype(np.float64)
    np.fill_diagonal(D, np.inf)
    ref = np.sort(D, axis=1)[:, :5]
    np.testing.assert_allclose(dist, np.sqrt(ref), rtol=1e-3, atol=1e-3)
    assert (np.diff(dist, axis=1) >= 0).all()
    d2, i2 = knn(X, 5, backend="numpy")
    np.testing.assert_allclose(d2, dist, rtol=1e-4, atol=1e-4)


def test_kmeans_plusplus_uses_fixed_centres():
    X, _ = _mixture(n=500, d=4, k=4, seed=8)
    c0 = X[:2].copy()
    C = kmeans_plusplus(X, 5, seed=0, centers0=c0)
    assert C.shape == (5, 4)
    assert np.array_equal(C[:2], c0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_clusters=0), "n_clusters=0"),
    (dict(n_clusters=11), "n_clusters=11"),
    (dict(n_clusters=2.5), "must be an int"),
    (dict(n_clusters=2, max_iter=0), "max_iter=0"),
    (dict(n_clusters=2, backend="gpu"), "backend='gpu'"),
    (dict(n_clusters=2, fixed_labels=np.full(10, 5)), "fixed_labels"),
    (dict(n_clusters=2, init=np.zeros((3, 2), np.float32)), "init must be"),
])
def test_kmeans_bad_parameters(kwargs, match):
    X = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    with pytest.raises(ParameterError, match=match):
        kmeans(X, **kwargs)


def test_bad_inputs():
    with pytest.raises(InputError, match="2-D"):
        kmeans(np.zeros(5, np.float32), 2)
    with pytest.raises(ParameterError, match="k=10"):
        knn(np.zeros((10, 2), np.float32), 10)
    with pytest.raises(InputError, match="features"):
        assign(np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32))


def test_kmeans_device_cpu_is_the_default_path_and_cuda_without_cuda_is_an_error():
    import torch
    from as3l_plugin.errors import ParameterError
    rng = np.random.default_rng(3)
    X = rng.standard_normal((500, 8)).astype(np.float32)
    a = kmeans(X, 5, seed=1)
    b = kmeans(X, 5, seed=1, device="cpu")
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centers, b.centers)
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="device"):
            kmeans(X, 5, device="cuda")


def test_lockstep_runs_are_kmeans_with_init_and_fixed_labels():
    """constrained_kmeans_lockstep is clustering's Lloyd driver on several runs at once:
    fixed rows held, the same partition as kmeans(init=, fixed_labels=) run alone, same
    iteration counts, progress reported after every iteration; faiss falls back to numpy
    products for fixed rows."""
    from as3l_plugin.clustering import constrained_kmeans_lockstep

    X, _ = _mixture(n=1500, d=8, k=5, seed=3, scale=8.0)
    rng = np.random.default_rng(0)
    specs = []
    for K in (5, 9):
        fixed = np.full(1500, -1, dtype=np.int64)
        fixed[:K] = np.arange(K)
        specs.append((X[rng.choice(1500, K, replace=False)].copy(), fixed))
    seen = []
    res = constrained_kmeans_lockstep(X, specs, max_iter=30, backend="numpy",
                                      progress=seen.append)
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0
    for (init, fixed), (labels, n_iter) in zip(specs, res):
        assert labels.dtype == np.int64 and (labels[:init.shape[0]] == fixed[:init.shape[0]]).all()
        for be in ("numpy", "torch"):
            ref = kmeans(X, init.shape[0], init=init, fixed_labels=fixed, max_iter=30,
                         backend=be)
            assert n_iter == ref.n_iter
            np.testing.assert_array_equal(labels, ref.labels)
    pytest.importorskip("faiss")
    init, fixed = specs[0]
    a = kmeans(X, 5, init=init, fixed_labels=fixed, backend="faiss")
    b = kmeans(X, 5, init=init, fixed_labels=fixed, backend="numpy")
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.centers.tobytes() != b"" and a.n_iter == b.n_iter


def test_fit_rows_subsample_then_every_row_assigned():
    """Beyond fit_rows, Lloyd runs on a seeded subsample (fixed rows included) and every row
    is then assigned once: labels are the nearest fitted centre (fixed rows kept), the result
    is deterministic per seed, and fit_rows >= n (or None) is the plain full-data run."""
    from as3l_plugin.clustering import fit_size, fit_subsample

    X, y = _mixture(n=4000, d=8, k=5, seed=1, scale=8.0)
    fixed = np.full(4000, -1, dtype=np.int64)
    fixed[[7, 3999]] = [0, 1]
    a = kmeans(X, 5, seed=2, fit_rows=600, fixed_labels=fixed)
    b = kmeans(X, 5, seed=2, fit_rows=600, fixed_labels=fixed)
    assert a.labels.tobytes() == b.labels.tobytes() and a.centers.tobytes() == b.centers.tobytes()
    assert a.labels.shape == (4000,) and a.labels[7] == 0 and a.labels[3999] == 1
    free = fixed < 0
    near = pairwise_sqdist(X, a.centers).argmin(1)
    assert (a.labels[free] == near[free]).all()
    np.testing.assert_allclose(a.inertia, float(((X - a.centers[a.labels]) ** 2).sum()), rtol=1e-4)
    # well separated blobs: the subsample finds the same partition as all rows
    full = kmeans(X, 5, seed=2, fit_rows=None)
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(kmeans(X, 5, seed=2, fit_rows=600).labels, full.labels) > 0.99
    for fr in (4000, 10**6, None):
        r = kmeans(X, 5, seed=2, fit_rows=fr)
        assert r.labels.tobytes() == full.labels.tobytes()
    # 'auto' keeps every row up to max(FIT_ROWS_MIN, 256 K)
    assert fit_size(60000, 10) == 60000 and fit_size(10**6, 100) == 65536
    assert fit_size(10**6, 1000) == 256000 and fit_size(500, 10, None) == 500
    rows = fit_subsample(10**6, 1000, seed=0, keep=[5, 999999])
    assert rows.size == len(set(rows.tolist())) and {5, 999999} <= set(rows.tolist())
    assert (np.diff(rows) > 0).all() and (fit_subsample(10**6, 1000, 0) == fit_subsample(10**6, 1000, 0)).all()
    with pytest.raises(ParameterError, match="fit_rows"):
        kmeans(X, 5, fit_rows=4)
    with pytest.raises(ParameterError, match="fit_rows"):
        kmeans(X, 5, fit_rows="all")


def test_lockstep_sparse_fixed_and_fit_rows():
    """Fixed rows given as (rows, clusters) pairs are the same as the dense (n,) form; with
    fit_rows below n the runs iterate on one subsample and every row is assigned at the end
    (the fixed rows kept), deterministically."""
    from as3l_plugin.clustering import constrained_kmeans_lockstep

    X, _ = _mixture(n=3000, d=8, k=5, seed=4, scale=8.0)
    rng = np.random.default_rng(1)
    rows = np.array([2900, 11, 400, 1234, 77], dtype=np.int64)   # unsorted on purpose
    dense, sparse = [], []
    for K in (5, 8):
        init = X[rng.choice(3000, K, replace=False)].copy()
        cl = np.arange(5) % K
        f = np.full(3000, -1, dtype=np.int64)
        f[rows] = cl
        dense.append((init, f))
        sparse.append((init, (rows, cl)))
    for fr in (None, 700):
        a = constrained_kmeans_lockstep(X, dense, fit_rows=fr, seed=3)
        b = constrained_kmeans_lockstep(X, sparse, fit_rows=fr, seed=3)
        for (la, na), (lb, nb), (_, f) in zip(a, b, dense):
            assert la.tobytes() == lb.tobytes() and na == nb
            assert (la[rows] == f[rows]).all() and la.shape == (3000,)
