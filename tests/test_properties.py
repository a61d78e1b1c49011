"""Property-based tests (hypothesis) of every sampler and propagator over random shapes,
budgets and class counts (issue 7).

Samplers: ``budget`` unique int64 indices in range, disjoint from a warm-start labeled set,
the same for the same seed. Propagators: float32 ``(n, C)``, finite, non-negative, rows
summing to 1, labeled rows one-hot of their label, the same bytes for the same seed.
Inputs include heavy ties (features rounded to a few values): a K-based method may then
refuse with a clear :class:`InputError` (fewer distinct rows than clusters), never crash
or return an invalid result.
"""

import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from as3l_plugin.errors import InputError  # noqa: E402
from as3l_plugin.propagation import get_propagator, list_propagators  # noqa: E402
from as3l_plugin.selection import get_sampler, list_samplers  # noqa: E402

SETTINGS = dict(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def feature_matrices(draw, max_n=48):
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    ties = draw(st.sampled_from([None, 0, 1]))  # None: continuous; k: rounded to k decimals
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5.0, size=(draw(st.integers(1, 5)), d))
    X = centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, d))
    if ties is not None:
        X = np.round(X, ties)
    return X.astype(draw(st.sampled_from([np.float32, np.float64])))


def _distinct(X):
    return np.unique(np.asarray(X, np.float32), axis=0).shape[0]


@pytest.mark.parametrize("name", list_samplers())
@settings(**SETTINGS)
@given(X=feature_matrices(), data=st.data())
def test_sampler_contract(name, X, data):
    n = X.shape[0]
    n_lab = data.draw(st.integers(0, n - 1), label="warm-start labeled")
    labeled = np.random.default_rng(n).permutation(n)[:n_lab]
    budget = data.draw(st.integers(1, n - n_lab), label="budget")
    seed = data.draw(st.integers(0, 1000), label="seed")
    sampler = get_sampler(name)
    try:
        idx = sampler.select(X, budget, seed=seed, labeled_idx=labeled)
    except InputError as exc:  # only a legitimate refusal
        assert _distinct(X) < budget + n_lab, f"{name} refused a valid input: {exc}"
        return
    assert idx.dtype == np.int64 and idx.shape == (budget,)
    assert np.unique(idx).size == budget
    assert idx.min() >= 0 and idx.max() < n
    assert not np.isin(idx, labeled).any()
    again = get_sampler(name).select(X, budget, seed=seed, labeled_idx=labeled)
    assert again.tobytes() == idx.tobytes()


@pytest.mark.parametrize("name", list_propagators())
@settings(**SETTINGS)
@given(X=feature_matrices(), data=st.data())
def test_propagator_contract(name, X, data):
    n = X.shape[0]
    C = data.draw(st.integers(1, 6), label="num_classes")
    m = data.draw(st.integers(1, n), label="labeled")
    rng = np.random.default_rng(data.draw(st.integers(0, 1000), label="label seed"))
    idx = rng.permutation(n)[:m]
    labels = rng.integers(0, C, m)
    params = {"ks": sorted(set(data.draw(st.lists(st.integers(2, 12), min_size=1, max_size=3),
                                         label="ks")))} if name == "seeded_kmeans" else {}
    prop = get_propagator(name, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uniform rows are reported by a PropagationWarning
        try:
            P = prop.propagate(X, idx, labels, C, seed=0)
        except InputError as exc:
            assert name == "seeded_kmeans" and _distinct(X) < max(params["ks"]), exc
            return
        P2 = get_propagator(name, **params).propagate(X, idx, labels, C, seed=0)
    assert P.dtype == np.float32 and P.shape == (n, C)
    assert np.isfinite(P).all() and (P >= 0).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(P[idx], np.eye(C, dtype=np.float32)[labels])
    assert P.tobytes() == P2.tobytes()


def test_seeded_kmeans_with_fewer_distinct_rows_than_k_labels_every_row():
    """K above the number of distinct rows used to leave empty clusters and uniform rows."""
    X = np.repeat(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), 20, axis=0)
    prop = get_propagator("seeded_kmeans")
    with pytest.warns(UserWarning, match="3 distinct rows"):
        P = prop.propagate(X, np.array([0, 20, 40]), np.array([0, 1, 2]), 3)
    assert prop.n_uniform_ == 0
    np.testing.assert_array_equal(P.argmax(1), np.arange(60) // 20)


def test_count_distinct_rows_is_exact():
    from as3l_plugin.clustering import count_distinct_rows
    X = np.repeat(np.arange(12, dtype=np.float32).reshape(4, 3), 5, axis=0)
    assert count_distinct_rows(X) == 4
    assert count_distinct_rows(X, at_least=3) >= 3 and count_distinct_rows(X, at_least=9) == 4
    X[:, 0] = 0  # the leading-column shortcut must not undercount distinct rows
    assert count_distinct_rows(X, at_least=4) == 4
