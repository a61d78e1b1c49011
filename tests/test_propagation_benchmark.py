"""Smoke test of the speed benchmark's two sides (no timing assertions)."""
import numpy as np
import pytest

from as3l_plugin.benchmarks import offline_speed as bench
from as3l_plugin.metrics import prior_accuracy


def test_both_sides_do_the_same_work_on_blobs(blobs):
    X, y = blobs
    idx = bench.sklearn_select(X, 4, seed=0)  # ours_select is the as3l sampler, tested there
    assert idx.dtype == np.int64 and np.unique(idx).size == 4
    assert sorted(y[idx]) == [0, 1, 2, 3]
    idx = np.array([0, 100, 200, 300])
    for prior_fn in (bench.ours_prior, bench.sklearn_prior):
        P = prior_fn(X, idx, y[idx], 4, seed=0)
        assert P.shape == (400, 4) and P.dtype == np.float32
        np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)
        # K = 10..60 > 4 seeds: only part of each blob is covered, but never wrongly
        covered = P.max(1) > 0.5
        assert covered.sum() > 100 and (P[covered].argmax(1) == y[covered]).all()
    assert prior_accuracy(bench.sklearn_prior(X, idx, y[idx], 4, ks=(4,)), y) == 1.0


def test_gmm_shapes():
    X, y = bench.make_gmm(n=500, dim=16, n_classes=3)
    assert X.shape == (500, 16) and X.dtype == np.float32 and set(y) == {0, 1, 2}


def test_faiss_side_does_the_same_work_on_blobs(blobs):
    pytest.importorskip("faiss")
    X, y = blobs
    idx = bench.faiss_select(X, 4, seed=0)
    assert idx.dtype == np.int64 and np.unique(idx).size == 4
    idx = np.array([0, 100, 200, 300])
    P = bench.faiss_prior(X, idx, y[idx], 4, seed=0)
    assert P.shape == (400, 4) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(1), 1, atol=1e-5)
    covered = P.max(1) > 0.5
    assert covered.sum() > 100 and (P[covered].argmax(1) == y[covered]).all()
