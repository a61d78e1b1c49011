"""k-nearest-labeled-neighbours prior: the label distribution of the k closest labeled samples.

Each sample looks at its ``k`` nearest labeled samples (Euclidean distance in feature space;
ties by labeled position) and takes their label histogram, either as a plain vote
(``weights='uniform'``) or weighted by inverse distance (``weights='distance'``, weight
``1 / (dist + eps)`` with ``eps`` = 1e-6 × the median nearest-labeled distance, so a sample
sitting on a labeled one is dominated by it without dividing by zero). ``k`` larger than the
number of labeled samples uses them all. Distances are computed in chunks of rows, so memory
is ``O(chunk × m)`` on top of the features.
"""

from __future__ import annotations

import numpy as np

from ..validate import Interval, Options
from .base import BasePropagator

WEIGHTS = ("distance", "uniform")


class KNNPropagator(BasePropagator):
    """Label distribution of the k nearest labeled samples.

    Parameters
    ----------
    k : int, default=3
        Labeled neighbours per sample (capped at the number of labeled samples).
    weights : {'distance', 'uniform'}, default='distance'
        Inverse-distance weighting or a plain vote.
    backend : {'auto', 'torch', 'numpy'}, default='auto'
        Matrix-product backend of :func:`as3l_plugin.clustering.pairwise_sqdist`.

    Attributes
    ----------
    k_ : int
        The k actually used.
    coverage_, n_uniform_ : see :class:`~.base.BasePropagator`.
    """

    #: rows of the dataset per distance block
    CHUNK_ROWS = 8192

    _parameter_constraints = {
        "k": [Interval(int, 1, None, message="must be an int >= 1")],
        "weights": [Options(WEIGHTS)],
    }

    def __init__(self, *, k=3, weights="distance", backend="auto"):
        self.k = k
        self.weights = weights
        self.backend = backend

    def _propagate(self, X, labeled_idx, labels, num_classes, seed):
        from ..clustering import pairwise_sqdist

        n = X.shape[0]
        m = labeled_idx.size
        k = int(min(self.k, m))
        self.k_ = k
        L = X[labeled_idx]
        nn_idx = np.empty((n, k), dtype=np.int64)
        nn_dist = np.empty((n, k), dtype=np.float64)
        for s in range(0, n, self.CHUNK_ROWS):
            e = min(n, s + self.CHUNK_ROWS)
            D = pairwise_sqdist(X[s:e], L, backend=self.backend)
            # stable sort: equal distances keep the labeled order (deterministic)
            order = np.argsort(D, axis=1, kind="stable")[:, :k]
            nn_idx[s:e] = order
            nn_dist[s:e] = np.sqrt(np.take_along_axis(D, order, axis=1))
        if self.weights == "distance":
            scale = float(np.median(nn_dist[:, 0]))
            eps = 1e-6 * scale if scale > 0 else 1e-12
            w = 1.0 / (nn_dist + eps)
        else:
            w = np.ones_like(nn_dist)
        out = np.zeros((n, num_classes), dtype=np.float64)
        rows = np.repeat(np.arange(n), k)
        np.add.at(out, (rows, labels[nn_idx].ravel()), w.ravel())
        return out
