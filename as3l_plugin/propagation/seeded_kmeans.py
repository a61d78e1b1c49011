"""The paper's prior: constrained seeded K-means at several K (AS3L Sec. 3.3).

For every K in ``ks`` (default 10, 20, 30, 40, 50, 60) the features are clustered with
*constrained seeded K-means* (Basu, Banerjee & Mooney 2002): centres start from the labeled
samples ("seeds") and every seed stays in its own cluster in every assignment step; the other
samples move freely. The label histogram of a cluster's labeled members, normalised, is then
given to every member of that cluster. The K runs are averaged and each row normalised;
rows that no run covered become uniform (see :class:`~.base.BasePropagator`).

Seeding when K differs from the number of labeled samples m
-----------------------------------------------------------
The seeds are first split into ``G = min(K, m)`` *seed groups*; group g is cluster g, its
centre starts at the mean of its seeds and its seeds are held in it.

- ``K >= m``: every labeled sample is its own group (G = m). The remaining ``K - m``
  clusters start from greedy k-means++ around the seeds (on a seeded subsample, see
  :func:`as3l_plugin.clustering.kmeans_plusplus`); one k-means++ sequence is drawn for the
  largest K and every smaller K takes its first ``K - m`` centres (:func:`initial_centers`).
  These clusters hold no seed, so their members get no evidence from this K — the paper's
  "K greater than the number of labeled samples".
- ``K < m`` and K at least the number P of classes present: groups never mix classes. Each
  class gets one group, and the remaining ``K - P`` groups go one at a time to the class with
  the highest ``seeds / groups`` ratio (D'Hondt; ties to the smaller class id). Inside a
  class, its seeds are split into its groups by farthest-point (k-center greedy) seeding —
  starting from the seed nearest the class mean, each next group centre is the seed farthest
  from the chosen ones (ties to the smaller position) — and every seed joins the nearest
  chosen centre. With K = P this is exactly Basu et al.'s seeded K-means (one cluster per
  class, started at the class mean).
- ``K < P`` (fewer clusters than classes present): the P class means are grouped the same
  farthest-point way into K groups, so the classes whose seeds are closest share a cluster;
  that cluster's histogram mixes them and its members get a soft label.

All choices are deterministic; ``seed`` only drives the k-means++ seeding of the free
clusters, so the same seed gives byte-identical output.

Combining the K runs
--------------------
``uncovered='ignore'`` (default, the paper's text): a run in which a sample's cluster holds no
seed contributes nothing for that sample; the prior is the normalised sum of the other runs.
``uncovered='uniform'``: such a run contributes the uniform distribution instead, so a sample
covered by few runs (far from every labeled sample) gets a flatter, lower-confidence prior
(the paper's "those farther away from any labeled samples will have lower confidence").
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..clustering import BACKENDS
from ..errors import ParameterError
from ..validate import FIT_ROWS, Boolean, Device, Interval, Options
from .base import BasePropagator, PropagationWarning, RowEvidence

DEFAULT_KS = (10, 20, 30, 40, 50, 60)
UNCOVERED = ("ignore", "uniform")


def _farthest_point_groups(P: np.ndarray, k: int) -> np.ndarray:
    """Split the rows of ``P`` (small, float) into at most ``k`` groups, deterministically.

    The first centre is the row nearest the mean; each next one is the row farthest from the
    chosen centres (first on ties); rows join the nearest centre (earliest chosen on ties).
    Stops early when every row coincides with a centre (duplicates), so a group is never
    empty.

    Returns
    -------
    groups : ndarray of int64, shape (len(P),), values in ``[0, n_groups)``.
    """
    P = np.asarray(P, dtype=np.float64)
    if k >= len(P):
        return np.arange(len(P), dtype=np.int64)
    first = int(np.argmin(((P - P.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dmin = ((P - P[first]) ** 2).sum(axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dmin))
        if dmin[nxt] <= 0:
            break
        chosen.append(nxt)
        dmin = np.minimum(dmin, ((P - P[nxt]) ** 2).sum(axis=1))
    D = ((P[:, None, :] - P[chosen][None, :, :]) ** 2).sum(axis=2)
    return D.argmin(axis=1).astype(np.int64)


def seed_groups(X: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Group the m labeled samples into ``min(n_clusters, m)`` seed clusters (see module doc).

    Parameters
    ----------
    X : ndarray of float32, shape (m, d)
        Features of the labeled samples.
    labels : ndarray of int64, shape (m,)
        Their class ids.
    n_clusters : int
        K.

    Returns
    -------
    groups : ndarray of int64, shape (m,)
        Cluster id of every seed; ids are ``0 .. G-1`` with G <= K, every id used.
    """
    m = len(labels)
    K = int(n_clusters)
    if K >= m:
        return np.arange(m, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    groups = np.empty(m, dtype=np.int64)
    if K < classes.size:
        means = np.stack([X[labels == c].mean(axis=0, dtype=np.float64) for c in classes])
        cg = _farthest_point_groups(means, K)
        _, cg = np.unique(cg, return_inverse=True)
        groups[:] = cg[np.searchsorted(classes, labels)]
        return groups
    # D'Hondt allocation of K groups over the classes, at least one each, at most `count`
    alloc = np.ones(classes.size, dtype=np.int64)
    for _ in range(K - classes.size):
        ratio = np.where(alloc < counts, counts / alloc, -1.0)
        alloc[int(np.argmax(ratio))] += 1
    nxt = 0
    for c, k in zip(classes, alloc):
        members = np.flatnonzero(labels == c)
        g = _farthest_point_groups(X[members], int(k))
        _, g = np.unique(g, return_inverse=True)
        groups[members] = nxt + g
        nxt += int(g.max()) + 1
    return groups


def initial_centers(X, labeled_idx, labels, ks, seed, *, backend="auto"):
    """Initial centres and fixed labels of every run (see the module docstring).

    Seed-group clusters start at the mean of their seeds. The free clusters of all runs are
    prefixes of one greedy k-means++ sequence drawn around the m labeled samples
    (:func:`as3l_plugin.clustering.kmeans_plusplus` with ``centers0`` = the seeds, seeded by
    ``seed``), so run K >= m starts from the seeds plus the first K - m centres of it. (A run
    with K < m whose seeds coincide, leaving G < K groups, draws its own K - G.)

    Returns
    -------
    list of (init float32 (K, d), (rows int64 (m,), clusters int64 (m,))), one per K: the
    seeds' row numbers (``labeled_idx``) and the cluster each is held in.
    """
    from ..clustering import kmeans_plusplus

    n, d = X.shape
    Xl = X[labeled_idx]
    m = Xl.shape[0]
    n_extra = max(ks) - m
    shared = None
    if n_extra > 0:
        shared = kmeans_plusplus(X, m + n_extra, seed=seed, centers0=Xl,
                                 backend=backend)[m:]
    specs = []
    for K in ks:
        groups = seed_groups(Xl, labels, K)
        G = int(groups.max()) + 1
        means = np.zeros((G, d), dtype=np.float64)
        np.add.at(means, groups, Xl)
        means /= np.bincount(groups, minlength=G)[:, None]
        means = means.astype(np.float32)
        if K == G:
            init = means
        elif G == m:
            init = np.vstack([means, shared[:K - m]])
        else:
            init = kmeans_plusplus(X, K, seed=seed, centers0=means, backend=backend)
            init[:G] = means
        specs.append((np.ascontiguousarray(init, dtype=np.float32),
                      (np.asarray(labeled_idx, dtype=np.int64), groups)))
    return specs


class SeededKMeansPropagator(BasePropagator):
    """Constrained seeded K-means at several K, averaged (the paper's prior, Sec. 3.3).

    Parameters
    ----------
    ks : sequence of int, default=(10, 20, 30, 40, 50, 60)
        Numbers of clusters, one K-means run each. A K larger than the number of samples is
        lowered to it (with a warning).
    max_iter : int, default=50
        Lloyd iterations per run at most.
    tol : float, default=1e-4
        Relative centre-shift tolerance (as scikit-learn's KMeans).
    uncovered : {'ignore', 'uniform'}, default='ignore'
        What a run contributes for a sample whose cluster holds no labeled sample (see the
        module docstring).
    lockstep : bool, default=True
        Iterate the runs of all K together, one pass over the features per iteration
        (:func:`as3l_plugin.clustering.constrained_kmeans_lockstep`; same algorithm);
        ``False`` calls :func:`as3l_plugin.clustering.kmeans` once per K.
    backend : {'auto', 'torch', 'numpy', 'faiss'}, default='auto'
        Matrix-product backend (``'faiss'`` applies to ``lockstep=False`` only).
    fit_rows : 'auto', int or None, default='auto'
        Rows the runs iterate on before every row is assigned to their centres
        (:func:`as3l_plugin.clustering.constrained_kmeans_lockstep`; ``'auto'``: all rows up
        to ``max(65536, 256 max(ks))``, ``None``: always all rows).
    device : str, optional
        Torch device of the runs' products (``'cuda'``); default the CPU.

    Attributes
    ----------
    coverage_ : float
        Fraction of rows that got label evidence from at least one run (1.0 with
        ``uncovered='uniform'`` counts only real evidence too).
    coverage_per_k_ : dict[int, float]
        Fraction of rows whose cluster held a labeled sample, per K.
    n_iter_per_k_ : dict[int, int]
        Lloyd iterations run per K.
    n_uniform_ : int
        Rows set to uniform because no run covered them.
    """

    _parameter_constraints = {
        # ks: _ks() (a list, checked and normalised before the others)
        "max_iter": [Interval(int, 1, None, message="must be an int >= 1")],
        "tol": [Interval(numbers.Real, 0, None, closed="left", bool_ok=True)],
        "lockstep": [Boolean()],
        "backend": [Options(BACKENDS)],
        "uncovered": [Options(UNCOVERED)],
        "fit_rows": FIT_ROWS,
        "device": [None, Device()],
    }

    def __init__(self, *, ks=DEFAULT_KS, max_iter=50, tol=1e-4, uncovered="ignore",
                 lockstep=True, backend="auto", fit_rows="auto", device=None):
        self.ks = ks
        self.max_iter = max_iter
        self.tol = tol
        self.uncovered = uncovered
        self.lockstep = lockstep
        self.backend = backend
        self.fit_rows = fit_rows
        self.device = device

    def _check_params(self):
        self._ks()
        super()._check_params()

    def _ks(self) -> tuple:
        """``ks`` as a tuple of ints, or :class:`ParameterError`."""
        ks = self.ks
        if isinstance(ks, numbers.Integral) and not isinstance(ks, bool):
            ks = (ks,)
        try:
            ks = tuple(ks)
        except TypeError:
            raise ParameterError(f"ks={self.ks!r} must be a list of ints >= 1, e.g. "
                                 "10,20,30", field="ks") from None
        if not ks or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1
                         for k in ks):
            raise ParameterError(f"ks={self.ks!r} must be a non-empty list of ints >= 1",
                                 field="ks")
        return tuple(int(k) for k in ks)

    def get_params(self):
        p = super().get_params()
        if isinstance(p["ks"], numbers.Integral):
            p["ks"] = [int(p["ks"])]
        else:
            p["ks"] = [int(k) for k in p["ks"]]
        return p

    def _runs(self, X, specs, seed=0):
        """Labels of every constrained K-means run, as [(labels, n_iter)] in ``specs`` order."""
        from tqdm.auto import tqdm

        if self.lockstep:
            from ..clustering import constrained_kmeans_lockstep

            bar = tqdm(total=len(specs), desc="seeded k-means (runs done)", unit="run",
                       disable=None, leave=False)

            def progress(n_active):
                bar.update(len(specs) - n_active - bar.n)
            try:
                return constrained_kmeans_lockstep(
                    X, specs, max_iter=int(self.max_iter), tol=float(self.tol),
                    backend="numpy" if self.backend == "numpy" else "auto",
                    progress=progress, seed=seed, fit_rows=self.fit_rows, device=self.device)
            finally:
                bar.close()
        from ..clustering import kmeans

        out = []
        for init, (rows, clusters) in tqdm(specs, desc="seeded k-means", unit="K",
                                           disable=None, leave=False):
            fixed = np.full(X.shape[0], -1, dtype=np.int64)
            fixed[rows] = clusters
            res = kmeans(X, init.shape[0], seed=seed, n_init=1, max_iter=int(self.max_iter),
                         tol=float(self.tol), init=init, fixed_labels=fixed,
                         backend=self.backend, fit_rows=self.fit_rows, device=self.device)
            out.append((res.labels, int(res.n_iter)))
        return out

    def _propagate(self, X, labeled_idx, labels, num_classes, seed):
        ks = self._ks()
        n = X.shape[0]
        if max(ks) > n:
            warnings.warn(f"ks={list(ks)} has K > n_samples={n}; those runs use K={n}",
                          PropagationWarning, stacklevel=4)
            ks = tuple(min(k, n) for k in ks)
        from ..clustering import count_distinct_rows
        distinct = count_distinct_rows(X, at_least=max(ks))
        if max(ks) > distinct:  # more clusters than points: the extra ones stay empty
            warnings.warn(f"ks={list(ks)} has K > {distinct} distinct rows; those runs use "
                          f"K={distinct}", PropagationWarning, stacklevel=4)
            ks = tuple(min(k, distinct) for k in ks)
        specs = initial_centers(X, labeled_idx, labels, ks, seed,
                                backend="numpy" if self.backend == "numpy" else "auto")
        self.coverage_per_k_ = {}
        self.n_iter_per_k_ = {}
        runs = []  # (labels int64 (n,), normalised histogram (K, C), has-seed (K,)) per K
        for K, (lab_all, n_iter) in zip(ks, self._runs(X, specs, seed)):
            hist = np.zeros((K, num_classes), dtype=np.float64)
            np.add.at(hist, (lab_all[labeled_idx], labels), 1.0)
            tot = hist.sum(axis=1)
            has = tot > 0
            hist[has] /= tot[has, None]
            runs.append((lab_all.astype(np.int32), hist, has))  # K < 2**31; half the memory
            self.coverage_per_k_[int(K)] = float(np.count_nonzero(has[lab_all]) / n)
            self.n_iter_per_k_[int(K)] = int(n_iter)
        uniform = self.uncovered == "uniform"

        def rows(s, e):
            """The averaged votes of rows s:e (float64), summed over K in ``ks`` order."""
            votes = np.zeros((e - s, num_classes), dtype=np.float64)
            covered_any = np.zeros(e - s, dtype=bool)
            for lab_all, hist, has in runs:
                lab = lab_all[s:e]
                row_has = has[lab]
                votes += hist[lab]
                if uniform:
                    votes[~row_has] += 1.0 / num_classes
                covered_any |= row_has
            if uniform:
                votes[~covered_any] = 0.0  # no real evidence: let the base make it uniform
            return votes / len(ks)
        return RowEvidence(n, rows)
