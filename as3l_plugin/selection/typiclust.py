"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): typical samples of uncovered clusters.

Algorithm (as in the authors' ``deep-al/pycls/al/typiclust.py``, with our fast K-means):

1. K-means into ``K = min(len(labeled_idx) + budget, max_clusters)`` clusters (500 by
   default, the authors' MAX_NUM_CLUSTERS).
2. Clusters with ``size <= min_cluster_size`` (5, MIN_CLUSTER_SIZE) are dropped — unless that
   would drop all of them.
3. Clusters are ordered by the number of labeled samples they hold (fewest first), then by
   size (largest first), then by id.
4. Pick ``i`` takes cluster ``order[i % len(order)]`` and selects its most *typical* sample
   not yet labeled/selected; typicality is ``1 / mean Euclidean distance to the k nearest
   neighbours inside the cluster`` with ``k = min(k_nn, size // 2)`` (``k_nn = 20``); in a
   cluster of more than ``max_cluster_rows`` members, among a seeded uniform subsample of
   that many (a guard against the ``O(size^2)`` kNN at millions of rows).

Differences from the reference code, all deliberate: Euclidean rather than squared
distances (the issue's definition; the argmax differs only through the averaging);
typicality is computed once on all members of the cluster (the authors recompute it on the
not-yet-chosen members, which matters only when a cluster is visited twice); the authors'
features are L2-normalised before use — we use the features as given (normalise them
yourself if you want that); K-means is our seeded one for every K (the authors switch to
MiniBatchKMeans above 50 clusters); ties go to the smallest index.
"""

from __future__ import annotations

import numpy as np

from ..clustering import kmeans
from ..validate import FIT_ROWS, Device, Interval
from .base import BaseSampler
from ._utils import typicality


class TypiClustSampler(BaseSampler):
    """Most typical sample of the largest uncovered K-means cluster.

    Parameters
    ----------
    k_nn : int, default=20
        Neighbours for typicality.
    min_cluster_size : int, default=5
        Clusters of at most this size are skipped (unless all are that small).
    max_clusters : int, default=500
        Upper bound on K.
    n_init, max_iter, backend, fit_rows, device
        Passed to :func:`as3l_plugin.clustering.kmeans` (``fit_rows='auto'``: K-means fitted
        on all rows up to ``max(65536, 256 K)``, then every row assigned; ``device``: torch
        device of its products).
    max_cluster_rows : int, default=20000
        A cluster with more members has its typicality computed among a seeded uniform
        subsample of that many members (the kNN density of a uniform subsample peaks where
        the cluster's does; the exact computation is ``O(m^2 d)`` in the cluster size ``m``),
        and its pick is the most typical of them. Smaller clusters are exact.

    Attributes
    ----------
    cluster_labels_ : ndarray of int64, shape (n,)
    typicality_ : dict[int, ndarray of float64]
        Typicality of the members of every visited cluster (in member index order; of its
        subsample above ``max_cluster_rows``).
    """

    _parameter_constraints = {
        "k_nn": [Interval(int, 1, None)],
        "min_cluster_size": [Interval(int, 0, None)],
        "max_clusters": [Interval(int, 1, None)],
        "n_init": [Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None)],
        "max_cluster_rows": [Interval(int, 2, None)],
        "fit_rows": FIT_ROWS,
        "device": [None, Device()],
    }

    def __init__(self, *, k_nn=20, min_cluster_size=5, max_clusters=500, n_init=1,
                 max_iter=50, backend="auto", max_cluster_rows=20_000, fit_rows="auto",
                 device=None):
        self.k_nn = k_nn
        self.min_cluster_size = min_cluster_size
        self.max_clusters = max_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.backend = backend
        self.max_cluster_rows = max_cluster_rows
        self.fit_rows = fit_rows
        self.device = device

    def _select(self, X, budget, seed, labeled_idx):
        n = X.shape[0]
        K = min(n, labeled_idx.size + budget, self.max_clusters)
        res = kmeans(X, K, seed=seed, n_init=self.n_init, max_iter=self.max_iter,
                     backend=self.backend, fit_rows=self.fit_rows, device=self.device)
        labels = res.labels
        self.cluster_labels_ = labels
        sizes = np.bincount(labels, minlength=K)
        n_lab = np.bincount(labels[labeled_idx], minlength=K)
        ids = np.arange(K)
        rank = lambda cl: cl[np.lexsort((cl, -sizes[cl], n_lab[cl]))]  # noqa: E731
        full = rank(ids[sizes > 0])
        order = rank(ids[sizes > self.min_cluster_size])
        if order.size == 0:
            order = full
        taken = np.zeros(n, dtype=bool)
        taken[labeled_idx] = True
        self.typicality_ = {}
        members_of = {}
        chosen = []
        from tqdm.auto import tqdm
        with tqdm(total=min(budget, order.size), desc="typiclust typicality", unit="cluster",
                  disable=None, leave=False) as bar:
            self._picks(X, budget, seed, labels, order, full, taken, members_of, chosen, bar)
        return np.asarray(chosen, dtype=np.int64)

    def _picks(self, X, budget, seed, labels, order, full, taken, members_of, chosen, bar):
        while len(chosen) < budget:
            progressed = False
            for c in order:  # one round: at most one pick per cluster, as i % len(order)
                if len(chosen) == budget:
                    break
                c = int(c)
                if c not in members_of:
                    m = np.flatnonzero(labels == c)
                    if m.size > self.max_cluster_rows:  # typicality on a uniform subsample
                        rng = np.random.default_rng([int(seed), c])
                        m = np.sort(rng.choice(m, int(self.max_cluster_rows), replace=False))
                    members_of[c] = m
                    self.typicality_[c] = typicality(X[m], min(self.k_nn, max(1, m.size // 2)))
                    bar.update(1)
                m = members_of[c]
                t = np.where(taken[m], -np.inf, self.typicality_[c])
                j = int(np.argmax(t))
                if t[j] == -np.inf:
                    continue
                chosen.append(int(m[j]))
                taken[m[j]] = True
                progressed = True
            if not progressed:
                if order.size == full.size:  # pragma: no cover - budget <= unlabeled count
                    break
                order = full  # only skipped small clusters have samples left
