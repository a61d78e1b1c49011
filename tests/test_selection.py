import subprocess
import sys

import numpy as np
import pytest

from as3l_plugin.errors import InputError, ParameterError
from as3l_plugin.selection import (BaseSampler, get_sampler, list_samplers,
                                   register_sampler)
from as3l_plugin.selection.as3l import consistent_groups, medoid

ALL = ["as3l", "coreset", "kmedoids", "probcover", "random", "typiclust"]
# (name, params) pairs exercised by the generic contract tests
CONFIGS = [(n, {}) for n in ALL] + [("as3l", {"variant": "density"}),
                                    ("as3l", {"representative": "typical"}),
                                    ("as3l", {"representative": "mean"}),
                                    ("coreset", {"start": "random"}),
                                    ("probcover", {"delta": 3.0})]
IDS = [n + "".join(f"-{k}={v}" for k, v in p.items()) for n, p in CONFIGS]


def test_registry_lists_all_and_rejects_unknown():
    assert list_samplers() == ALL
    with pytest.raises(ParameterError, match="unknown sampler 'nope'; known: as3l, coreset"):
        get_sampler("nope")
    with pytest.raises(ParameterError, match="no parameter.*bogus"):
        get_sampler("as3l", bogus=1)
    with pytest.raises(ParameterError, match="already registered"):
        register_sampler("random")(type("X", (BaseSampler,), {}))
    with pytest.raises(ParameterError, match="variant='x'"):
        get_sampler("as3l", variant="x")


@pytest.mark.parametrize("name, params", CONFIGS, ids=IDS)
def test_contract_budget_unique_deterministic(blobs, name, params):
    X, y = blobs
    s = get_sampler(name, **params)
    a = s.select(X, 12, seed=3)
    assert a.dtype == np.int64 and a.shape == (12,)
    assert np.unique(a).size == 12
    assert a.min() >= 0 and a.max() < len(X)
    b = get_sampler(name, **params).select(X.copy(), 12, seed=3)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name, params", CONFIGS, ids=IDS)
def test_labeled_idx_is_disjoint(blobs, name, params):
    X, _ = blobs
    labeled = np.array([0, 5, 100, 250, 399])
    out = get_sampler(name, **params).select(X, 20, seed=1, labeled_idx=labeled)
    assert out.shape == (20,) and np.unique(out).size == 20
    assert not np.isin(out, labeled).any()


@pytest.mark.parametrize("name, params", CONFIGS, ids=IDS)
def test_whole_pool_can_be_selected(name, params):
    X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    out = get_sampler(name, **params).select(X, 27, seed=0, labeled_idx=[1, 2, 3])
    assert sorted(out.tolist()) == [i for i in range(30) if i not in (1, 2, 3)]


@pytest.mark.parametrize("name", ["as3l", "kmedoids", "typiclust", "probcover"])
def test_separable_blobs_full_coverage(blobs, name):
    X, y = blobs
    params = {"n_clusters": 4} if name == "probcover" else {}
    for seed in range(3):
        idx = get_sampler(name, **params).select(X, 4, seed=seed)
        assert sorted(y[idx].tolist()) == [0, 1, 2, 3], (name, seed)


def test_as3l_density_full_coverage(blobs):
    X, y = blobs
    for seed in range(3):
        idx = get_sampler("as3l", variant="density").select(X, 4, seed=seed)
        assert sorted(y[idx].tolist()) == [0, 1, 2, 3]


def test_seed_changes_random_choices(blobs):
    X, _ = blobs
    a = get_sampler("random").select(X, 10, seed=0)
    b = get_sampler("random").select(X, 10, seed=1)
    assert a.tobytes() != b.tobytes()


_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(int(sys.argv[1]))
from as3l_plugin.selection import get_sampler, list_samplers
rng = np.random.default_rng(0)
X = rng.normal(size=(1500, 12)).astype(np.float32)
print(";".join(get_sampler(n).select(X, 15, seed=2).tobytes().hex() for n in list_samplers()))
"""


@pytest.mark.slow
def test_byte_identical_across_processes_and_threads():
    outs = {subprocess.run([sys.executable, "-c", _SCRIPT, str(t)], capture_output=True,
                           text=True, check=True).stdout for t in (1, 2)}
    assert len(outs) == 1


@pytest.mark.parametrize("budget, exc, match", [
    (0, ParameterError, "budget=0 must be >= 1"),
    (-3, ParameterError, "budget=-3"),
    (401, ParameterError, r"budget=401 > 400 samples; lower budget"),
    (2.0, ParameterError, "budget=2.0 must be an int"),
    (True, ParameterError, "must be an int"),
    ("5", ParameterError, "must be an int"),
])
def test_bad_budget(blobs, budget, exc, match):
    X, _ = blobs
    with pytest.raises(exc, match=match):
        get_sampler("as3l").select(X, budget)


def test_budget_counts_only_unlabeled(blobs):
    X, _ = blobs
    with pytest.raises(ParameterError, match="budget=399 > 398 unlabeled samples"):
        get_sampler("random").select(X, 399, labeled_idx=[0, 1])


@pytest.mark.parametrize("name", ALL)
def test_nan_features_rejected_before_work(blobs, name):
    X, _ = blobs
    X = X.copy()
    X[7, 2] = np.nan
    with pytest.raises(InputError, match=r"features: 1 row\(s\) contain NaN.*\[7\]"):
        get_sampler(name).select(X, 4)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(5), "2-D"),
    (np.zeros((0, 3)), "empty"),
    (np.array([["a", "b"]]), "float"),
])
def test_bad_feature_arrays(bad, match):
    with pytest.raises(InputError, match=match):
        get_sampler("random").select(bad, 1)


@pytest.mark.parametrize("labeled, match", [
    ([0, 0], "duplicates"),
    ([400], "out of range"),
    ([-1], "out of range"),
    ([[1, 2]], "1-D"),
    ([0.5], "integer"),
])
def test_bad_labeled_idx(blobs, labeled, match):
    X, _ = blobs
    with pytest.raises(ParameterError, match=match):
        get_sampler("kmedoids").select(X, 3, labeled_idx=labeled)


def test_bad_seed(blobs):
    X, _ = blobs
    with pytest.raises(ParameterError, match="seed=-1"):
        get_sampler("random").select(X, 3, seed=-1)


def test_consistent_groups_is_partition_intersection():
    runs = np.array([[0, 0, 1, 1, 1, 2],
                     [5, 5, 5, 7, 7, 7]])
    gid, sizes = consistent_groups(runs)
    # cells: {0,1} (0,5); {2} (1,5); {3,4} (1,7); {5} (2,7); numbered by first member
    assert gid.tolist() == [0, 0, 1, 2, 2, 3]
    assert sizes.tolist() == [2, 1, 2, 1]


def test_consistent_groups_many_runs_large_k():
    rng = np.random.default_rng(0)
    runs = rng.integers(0, 5000, size=(8, 300))   # would overflow a naive K**C key
    gid, sizes = consistent_groups(runs)
    keys = {tuple(r) for r in runs.T}
    assert sizes.size == len(keys) and sizes.sum() == 300


def test_medoid_minimises_summed_distance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    members = np.arange(5, 45)
    m = medoid(X, members)
    D = np.sqrt(((X[members, None] - X[None, members]) ** 2).sum(-1)).sum(1)
    assert m == members[np.argmin(D)]


def test_as3l_diagnostics_and_one_pick_per_run0_cluster(blobs):
    X, _ = blobs
    s = get_sampler("as3l")
    idx = s.select(X, 8, seed=0)
    assert s.run_labels_.shape == (6, 400)
    assert s.group_ids_.shape == (400,) and s.group_sizes_.sum() == 400
    assert s.n_filled_ == 0
    ref = s.run_labels_[0]
    assert np.unique(ref[idx]).size == 8      # K = budget: every run-0 cluster once


def test_as3l_fills_when_groups_run_out():
    # 6 distinct points, each duplicated: only 6 groups exist for a budget of 9
    base = np.arange(6, dtype=np.float32)[:, None] * np.array([[10.0, 0.0]], np.float32)
    X = np.repeat(base, 2, axis=0)
    s = get_sampler("as3l")
    out = s.select(X, 9, seed=0)
    assert np.unique(out).size == 9 and s.n_filled_ >= 3


def test_typiclust_skips_small_clusters_and_picks_dense_point():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(200, 2)).astype(np.float32)
    outliers = (np.array([[50, 50], [52, 50], [50, 52]]) + 0).astype(np.float32)
    X = np.vstack([big, outliers])
    s = get_sampler("typiclust")
    idx = s.select(X, 2, seed=0)
    assert not np.isin(idx, [200, 201, 202]).any()   # 3-point cluster skipped (size <= 5)
    # the pick is near the density mode of the big blob
    assert np.linalg.norm(X[idx[0]]) < 0.6


def test_probcover_delta_and_coverage(blobs):
    X, y = blobs
    s = get_sampler("probcover", n_clusters=4)
    s.select(X, 4, seed=0)
    assert s.delta_ > 0 and s.coverage_ > 0.9
    # explicit tiny delta: every ball covers only itself -> random fill still returns budget
    s2 = get_sampler("probcover", delta=1e-6)
    out = s2.select(X, 5, seed=0)
    assert np.unique(out).size == 5


def test_probcover_graph_keeps_tail_block():
    from as3l_plugin.selection.probcover import delta_graph
    rng = np.random.default_rng(0)
    X = rng.normal(size=(103, 2)).astype(np.float32)
    indptr, indices = delta_graph(X, 0.5, chunk=10)    # 10 full blocks + a tail of 3
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    ref = (D < 0.5) | np.eye(103, dtype=bool)
    assert indptr[-1] == indices.size
    for i in (0, 57, 100, 102):
        assert sorted(indices[indptr[i]:indptr[i + 1]].tolist()) == np.flatnonzero(ref[i]).tolist()


def test_coreset_is_k_center_greedy():
    X = np.array([[0, 0], [1, 0], [10, 0], [0, 7], [5, 5]], dtype=np.float32)
    out = get_sampler("coreset").select(X, 3)
    # mean = (3.2, 2.4): nearest is (1,0)=1 [d2 ~ 10.5] vs (5,5)=4 [d2 ~ 10] -> 4
    # then the farthest: (0,0) and (10,0) tie at 50 -> smallest index 0; then (10,0)
    assert out.tolist() == [4, 0, 2]


def test_kmedoids_picks_nearest_to_centres(blobs):
    X, _ = blobs
    s = get_sampler("kmedoids")
    idx = s.select(X, 4, seed=0)
    for i in idx:
        c = s.cluster_labels_[i]
        members = np.flatnonzero(s.cluster_labels_ == c)
        mu = X[members].mean(0)
        d = ((X[members] - mu) ** 2).sum(1)
        assert i == members[np.argmin(d)]


def test_fit_rows_device_and_typiclust_cluster_guard():
    """fit_rows reaches the K-means of as3l / typiclust / seeded_kmeans (None and 'auto' are
    the same below the floor; a small fit_rows still selects valid, deterministic rows);
    a CUDA device where none exists is a one-field error; typiclust's max_cluster_rows only
    changes clusters larger than it, deterministically."""
    import torch

    from as3l_plugin.propagation import get_propagator

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=8.0, size=(5, 6))
    y = rng.integers(0, 5, 3000)
    X = (centers[y] + rng.normal(size=(3000, 6))).astype(np.float32)
    for name in ("as3l", "typiclust"):
        a = get_sampler(name).select(X, 5, seed=1)
        assert (get_sampler(name, fit_rows=None).select(X, 5, seed=1) == a).all()
        b = get_sampler(name, fit_rows=400).select(X, 5, seed=1)
        assert (get_sampler(name, fit_rows=400).select(X, 5, seed=1) == b).all()
        assert np.unique(b).size == 5 and set(y[b]) == set(range(5))
        if not torch.cuda.is_available():
            with pytest.raises(ParameterError) as ei:
                get_sampler(name, device="cuda").select(X, 5)
            assert ei.value.field == "device"
    for bad in (0, "all", 2.5):
        with pytest.raises(ParameterError, match="fit_rows"):
            get_sampler("as3l", fit_rows=bad)
    p = get_propagator("seeded_kmeans", ks=(5, 8)).propagate(X, a, y[a], 5, seed=0)
    q = get_propagator("seeded_kmeans", ks=(5, 8), fit_rows=None).propagate(X, a, y[a], 5,
                                                                            seed=0)
    assert p.tobytes() == q.tobytes()
    r = get_propagator("seeded_kmeans", ks=(5, 8), fit_rows=500).propagate(X, a, y[a], 5,
                                                                           seed=0)
    assert (r.argmax(1) == y).mean() > 0.95
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError) as ei:
            get_propagator("seeded_kmeans", device="cuda:0").propagate(X, a, y[a], 5)
        assert ei.value.field == "device"
    # typiclust: clusters of ~600 members; a guard above that changes nothing
    t = get_sampler("typiclust", max_cluster_rows=10_000).select(X, 5, seed=2)
    assert (get_sampler("typiclust").select(X, 5, seed=2) == t).all()
    s = get_sampler("typiclust", max_cluster_rows=50)
    g = s.select(X, 5, seed=2)
    assert (get_sampler("typiclust", max_cluster_rows=50).select(X, 5, seed=2) == g).all()
    assert all(v.size == 50 for v in s.typicality_.values())
    assert set(y[g]) == set(range(5))


def test_a_sampler_breaking_its_contract_is_a_contract_error():
    from as3l_plugin.errors import ContractError

    class Dup(BaseSampler):
        def _select(self, X, budget, seed, labeled_idx):
            return np.zeros(budget, dtype=np.int64)

    with pytest.raises(ContractError, match="duplicate indices .a bug in the sampler"):
        Dup().select(np.eye(5, dtype=np.float32), 2)
