"""The paper's "K-medoids" baseline [31]: K-means with K = budget, the sample closest to
each centre.

With ``labeled_idx`` (warm start) K becomes ``budget + len(labeled_idx)`` and clusters that
already hold a labeled sample are used last. Clusters are visited by size (largest first,
ties by cluster id); each contributes its unlabeled member nearest to its centre (ties:
smallest index). If clusters run out (only with a warm start), k-center greedy fills the
rest.
"""

from __future__ import annotations

import numpy as np

from ..clustering import kmeans
from ..validate import Interval
from .base import BaseSampler
from ._utils import kcenter_fill, nearest_to_centre


class KMedoidsSampler(BaseSampler):
    """K-means (K = budget) → nearest sample to every centre.

    Parameters
    ----------
    n_init : int, default=1
        K-means restarts (the lowest inertia wins).
    max_iter : int, default=50
        Lloyd iterations at most.
    backend : str, default='auto'
        Matrix-product backend of :func:`as3l_plugin.clustering.kmeans`.

    Attributes
    ----------
    cluster_labels_ : ndarray of int64, shape (n,)
        The K-means partition of the last call.
    """

    _parameter_constraints = {"n_init": [Interval(int, 1, None)],
                              "max_iter": [Interval(int, 1, None)]}

    def __init__(self, *, n_init=1, max_iter=50, backend="auto"):
        self.n_init = n_init
        self.max_iter = max_iter
        self.backend = backend

    def _select(self, X, budget, seed, labeled_idx):
        n = X.shape[0]
        K = min(n, budget + labeled_idx.size)
        res = kmeans(X, K, seed=seed, n_init=self.n_init, max_iter=self.max_iter,
                     backend=self.backend)
        labels = res.labels
        self.cluster_labels_ = labels
        is_lab = np.zeros(n, dtype=bool)
        is_lab[labeled_idx] = True
        sizes = np.bincount(labels, minlength=K)
        has_lab = np.bincount(labels[is_lab], minlength=K) > 0
        order = np.lexsort((np.arange(K), -sizes, has_lab))
        chosen = []
        for c in order:
            if len(chosen) == budget:
                break
            members = np.flatnonzero((labels == c) & ~is_lab)
            if members.size:
                chosen.append(nearest_to_centre(X, members, res.centers[c]))
        if len(chosen) < budget:
            chosen += kcenter_fill(X, chosen, labeled_idx, budget - len(chosen))
        return np.asarray(chosen, dtype=np.int64)
