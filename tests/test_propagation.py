import warnings

import numpy as np
import pytest

from as3l_plugin.errors import (AS3LError, ContractError, InputError, LabelsError,
                                ParameterError)
from as3l_plugin.propagation import (BasePropagator, PropagationWarning, get_propagator,
                                     list_propagators, register_propagator)
from as3l_plugin.propagation.seeded_kmeans import seed_groups

NAMES = ["seeded_kmeans", "label_spreading", "knn"]
FAST = {"seeded_kmeans": {"backend": "numpy"}, "label_spreading": {}, "knn": {"backend": "numpy"}}


@pytest.fixture
def blobs10():
    """Ten well-separated blobs of 60 points: X float32 (600, 6), y int64 (600,)."""
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=30.0, size=(10, 6))
    y = np.repeat(np.arange(10), 60)
    X = (centers[y] + rng.normal(size=(600, 6))).astype(np.float32)
    return X, y


def one_per_class(y, rng=0):
    r = np.random.default_rng(rng)
    return np.array([r.choice(np.flatnonzero(y == c)) for c in np.unique(y)], dtype=np.int64)


def _prop(name, **kw):
    return get_propagator(name, **{**FAST[name], **kw})


# --------------------------------------------------------------------------- registry
def test_registry_lists_and_rejects():
    assert list_propagators() == ["knn", "label_spreading", "seeded_kmeans"]
    with pytest.raises(ParameterError, match="known: knn, label_spreading, seeded_kmeans"):
        get_propagator("nope")
    with pytest.raises(ParameterError, match="no parameter.*bogus.*accepted: ks"):
        get_propagator("seeded_kmeans", bogus=1)
    with pytest.raises(ParameterError, match="already registered"):
        register_propagator("knn", BasePropagator)


@pytest.mark.parametrize("evidence, text", [
    (np.ones((3, 2)), "returned shape (3, 2), expected (4, 2) (a bug in the propagator)"),
    (-np.ones((4, 2)), "returned negative or non-finite evidence (a bug in the propagator)"),
    (np.full((4, 2), np.nan), "returned negative or non-finite evidence (a bug in the "
                              "propagator)"),
])
def test_broken_propagator_output_is_a_contract_error(evidence, text):
    class Broken(BasePropagator):
        def __init__(self):
            pass

        def _propagate(self, X, labeled_idx, labels, num_classes, seed):
            return evidence

    with pytest.raises(ContractError) as err:
        Broken().propagate(np.zeros((4, 2)), [0], [1], 2)
    assert str(err.value) == "Broken " + text and isinstance(err.value, AS3LError)


@pytest.mark.parametrize("name,params,field", [
    ("seeded_kmeans", {"ks": (10, 0)}, "ks"),
    ("seeded_kmeans", {"ks": "abc"}, "ks"),
    ("seeded_kmeans", {"uncovered": "drop"}, "uncovered"),
    ("label_spreading", {"alpha": 1.0}, "alpha"),
    ("label_spreading", {"n_neighbors": 0}, "n_neighbors"),
    ("knn", {"k": 0}, "k"),
    ("knn", {"weights": "gauss"}, "weights"),
])
def test_bad_hyper_parameters_named(name, params, field):
    with pytest.raises(ParameterError) as ei:
        get_propagator(name, **params)
    assert ei.value.field == field


# --------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_separable_blobs_perfect_prior(name, blobs10):
    X, y = blobs10
    idx = one_per_class(y)
    p = _prop(name)
    P = p.propagate(X, idx, y[idx], 10, seed=0)
    assert P.dtype == np.float32 and P.shape == (600, 10)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-6)
    assert (P.argmax(axis=1) == y).all()
    np.testing.assert_array_equal(P[idx], np.eye(10, dtype=np.float32)[y[idx]])
    assert p.coverage_ == 1.0 and p.n_uniform_ == 0


@pytest.mark.parametrize("name", NAMES)
def test_byte_identical_per_seed(name, blobs):
    X, y = blobs
    idx = np.array([3, 150, 260, 390, 10], dtype=np.int64)
    a = _prop(name).propagate(X, idx, y[idx], 4, seed=7)
    b = _prop(name).propagate(X, idx, y[idx], 4, seed=7)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", NAMES)
def test_missing_class_gets_a_zero_column_not_a_shift(name, blobs):
    """Classes 0 and 2 labeled only: columns must stay class ids (LabelSpreading trap)."""
    X, y = blobs
    idx = np.array([0, 1, 200, 201], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PropagationWarning)
        # K = 4 for seeded_kmeans: with K >> m most of a blob sits in seedless clusters
        P = _prop(name, **({"ks": (4,)} if name == "seeded_kmeans" else {})).propagate(
            X, idx, y[idx], 4, seed=0)
    for c in (0, 2):  # the blobs of the labeled classes are predicted right
        rows = y == c
        assert (P[rows].argmax(axis=1) == c).all()
    # no confident mass on the classes nobody labeled
    assert P[:, [1, 3]].max() <= 0.25 + 1e-6


def test_label_spreading_every_row_gets_mass_with_many_rows():
    """Trap: sklearn's default tol stops before labels cross the graph."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 3000)
    # a long thin chain: labels must travel ~300 hops from each end
    X = np.c_[t * 100, rng.normal(scale=0.01, size=3000)].astype(np.float32)
    y = (t > 0.5).astype(np.int64)
    idx = np.array([0, 2999])
    p = get_propagator("label_spreading", n_neighbors=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PropagationWarning)
        P = p.propagate(X, idx, y[idx], 2)
    assert p.n_uniform_ == 0
    assert (P.argmax(1) == y).mean() > 0.95


def test_label_spreading_disconnected_component_is_uniform_with_warning(blobs):
    X, y = blobs
    idx = np.array([0, 100, 200], dtype=np.int64)  # blob 3 has no label, no edge to others
    p = get_propagator("label_spreading")
    with pytest.warns(PropagationWarning, match="100 of 400 rows got no label evidence"):
        P = p.propagate(X, idx, y[idx], 4)
    np.testing.assert_allclose(P[y == 3], 0.25, atol=1e-6)
    assert p.n_uniform_ == 100 and p.coverage_ == pytest.approx(0.75)


def test_seeded_kmeans_uncovered_rows_uniform_and_counted(blobs):
    X, y = blobs
    idx = np.array([0, 100], dtype=np.int64)
    p = get_propagator("seeded_kmeans", ks=(4,), backend="numpy")
    with pytest.warns(PropagationWarning, match="no label evidence"):
        P = p.propagate(X, idx, y[idx], 4)
    unc = np.isclose(P, 0.25).all(axis=1)
    assert unc.sum() == p.n_uniform_ == 200
    assert set(y[unc]) == {2, 3}
    assert p.coverage_per_k_ == {4: 0.5}


def test_seeded_kmeans_uncovered_uniform_lowers_confidence(blobs):
    X, y = blobs
    idx = np.array([0, 100, 200, 300], dtype=np.int64)
    ign = get_propagator("seeded_kmeans", ks=(4, 40), backend="numpy")
    uni = get_propagator("seeded_kmeans", ks=(4, 40), backend="numpy", uncovered="uniform")
    a = ign.propagate(X, idx, y[idx], 4)
    b = uni.propagate(X, idx, y[idx], 4)
    assert (a.argmax(1) == y).all() and (b.argmax(1) == y).all()
    # rows covered only at K=4 are one-hot with 'ignore', (1 + 1/4) / 2 = 0.625 with 'uniform'
    only4 = ign.coverage_per_k_[40] < 1
    assert only4 and np.isclose(b.max(axis=1), 0.625).any()
    assert (b.max(axis=1) <= a.max(axis=1) + 1e-6).all()


def test_seeded_kmeans_k_larger_than_n_is_clipped(blobs):
    X, y = blobs
    idx = np.array([0, 100, 200, 300], dtype=np.int64)
    p = get_propagator("seeded_kmeans", ks=(4, 1000), backend="numpy")
    with pytest.warns(PropagationWarning, match="K > n_samples"):
        p.propagate(X, idx, y[idx], 4)


def test_knn_vote_and_distance():
    X = np.array([[0.0], [1.0], [2.0], [10.0], [3.0]], dtype=np.float32)
    idx = np.array([0, 1, 3])
    lab = np.array([0, 0, 1])
    P = get_propagator("knn", k=3, weights="uniform").propagate(X, idx, lab, 2)
    np.testing.assert_allclose(P[2], [2 / 3, 1 / 3], atol=1e-6)
    P = get_propagator("knn", k=1).propagate(X, idx, lab, 2)
    np.testing.assert_allclose(P[4], [1, 0])
    P = get_propagator("knn", k=2).propagate(X, idx, lab, 2)
    # row 4 (x=3): labeled at 1 (d=2, class 0) and 0 (d=3, class 0) -> all class 0
    np.testing.assert_allclose(P[4], [1, 0], atol=1e-6)
    P = get_propagator("knn", k=3).propagate(X, idx, lab, 2)
    w = np.array([1 / 2, 1 / 3, 1 / 7])  # x=3 to 1, 0, 10
    np.testing.assert_allclose(P[4], [w[:2].sum() / w.sum(), w[2] / w.sum()], atol=1e-4)


# --------------------------------------------------------------------------- seeding design
def test_seed_groups_cases():
    rng = np.random.default_rng(0)
    Xl = rng.normal(size=(12, 3)).astype(np.float32)
    lab = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    # K >= m: one group per seed
    np.testing.assert_array_equal(seed_groups(Xl, lab, 12), np.arange(12))
    np.testing.assert_array_equal(seed_groups(Xl, lab, 30), np.arange(12))
    # K == classes present: one pure group per class (Basu et al.)
    g = seed_groups(Xl, lab, 3)
    assert len(np.unique(g)) == 3
    for c in range(3):
        assert len(np.unique(g[lab == c])) == 1
    # classes < K < m: D'Hondt allocation 6,3,3 seeds and 5 groups -> 3,1,1; groups pure
    g = seed_groups(Xl, lab, 5)
    assert sorted(np.unique(g)) == list(range(5))
    for grp in np.unique(g):
        assert len(np.unique(lab[g == grp])) == 1
    assert len(np.unique(g[lab == 0])) == 3
    # K < classes: classes merged, every class whole in one group
    g = seed_groups(Xl, lab, 2)
    assert sorted(np.unique(g)) == [0, 1]
    for c in range(3):
        assert len(np.unique(g[lab == c])) == 1


def test_seeded_kmeans_more_labels_than_k(blobs10):
    """K < m (4 labels per class, K=10..60 spans both regimes): still perfect on blobs."""
    X, y = blobs10
    r = np.random.default_rng(3)
    idx = np.concatenate([r.choice(np.flatnonzero(y == c), 4, replace=False) for c in range(10)])
    p = get_propagator("seeded_kmeans", backend="numpy")
    P = p.propagate(X, idx, y[idx], 10, seed=0)
    assert (P.argmax(1) == y).all()
    assert p.coverage_per_k_[10] == p.coverage_per_k_[20] == 1.0


def test_seeded_kmeans_default_backend(blobs10):
    X, y = blobs10
    idx = one_per_class(y)
    P = get_propagator("seeded_kmeans", ks=(10, 20)).propagate(X, idx, y[idx], 10)
    assert (P.argmax(1) == y).all()


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("mutate,exc,field", [
    (lambda X, i, l, c: (np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), i, l, c),
     InputError, "features"),
    (lambda X, i, l, c: (X, np.array([0, 0]), np.array([1, 1]), c), ParameterError,
     "labeled_idx"),
    (lambda X, i, l, c: (X, np.array([0, 400]), np.array([1, 1]), c), ParameterError,
     "labeled_idx"),
    (lambda X, i, l, c: (X, np.array([], dtype=int), np.array([], dtype=int), c),
     ParameterError, "labeled_idx"),
    (lambda X, i, l, c: (X, np.array([0.0, 1.0]), np.array([1, 1]), c), ParameterError,
     "labeled_idx"),
    (lambda X, i, l, c: (X, i, l[:-1], c), LabelsError, "labels"),
    (lambda X, i, l, c: (X, i, np.array([0, 4]), c), LabelsError, "labels"),
    (lambda X, i, l, c: (X, i, np.array([0, -1]), c), LabelsError, "labels"),
    (lambda X, i, l, c: (X, i, l, 0), ParameterError, "num_classes"),
])
def test_input_validation(blobs, mutate, exc, field):
    X, y = blobs
    idx = np.array([0, 100])
    args = mutate(X, idx, y[idx], 4)
    for name in NAMES:
        with pytest.raises(exc) as ei:
            _prop(name).propagate(*args)
        assert ei.value.field == field
        assert isinstance(ei.value, AS3LError)


def test_seeded_kmeans_lockstep_matches_sequential_runs():
    """The lockstep path is the same algorithm as clustering.kmeans run once per K."""
    rng = np.random.default_rng(5)
    centers = rng.normal(scale=4.0, size=(6, 5))
    y = rng.integers(6, size=700)
    X = (centers[y] + rng.normal(size=(700, 5))).astype(np.float32)  # overlapping blobs
    idx = rng.choice(700, 9, replace=False)
    kw = dict(ks=(3, 6, 9, 15, 30), backend="numpy")
    a = get_propagator("seeded_kmeans", lockstep=True, **kw)
    b = get_propagator("seeded_kmeans", lockstep=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PropagationWarning)
        Pa = a.propagate(X, idx, y[idx], 6, seed=2)
        Pb = b.propagate(X, idx, y[idx], 6, seed=2)
    assert a.n_iter_per_k_ == b.n_iter_per_k_ and max(a.n_iter_per_k_.values()) > 2
    np.testing.assert_allclose(Pa, Pb, atol=1e-6)


def test_prior_does_not_depend_on_the_finalize_block_size(monkeypatch, tmp_path):
    """The prior is built in row blocks (RowEvidence, _finalize): any block size gives the
    same bits, and a read-only memmap of the features gives the same prior as the array."""
    from as3l_plugin.propagation import base
    from as3l_plugin.propagation import get_propagator

    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5.0, size=(4, 6))
    y = rng.integers(0, 4, 900)
    X = (centers[y] + rng.normal(size=(900, 6))).astype(np.float32)
    idx = np.array([5, 50, 500, 7, 800, 300])
    outs = {}
    for name, kw in (("seeded_kmeans", {}), ("seeded_kmeans", {"uncovered": "uniform"}),
                     ("knn", {})):
        for entries in (1 << 20, 4 * 7, 1):
            monkeypatch.setattr(base, "_FINALIZE_ENTRIES", entries)
            P = get_propagator(name, ks=(4, 9), **kw) if name == "seeded_kmeans" else \
                get_propagator(name, **kw)
            outs.setdefault((name, str(kw)), set()).add(
                P.propagate(X, idx, y[idx], 4, seed=1).tobytes())
    assert all(len(v) == 1 for v in outs.values())
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    a = get_propagator("seeded_kmeans").propagate(X, idx, y[idx], 4, seed=1)
    b = get_propagator("seeded_kmeans").propagate(Xm, idx, y[idx], 4, seed=1)
    assert a.tobytes() == b.tobytes()
