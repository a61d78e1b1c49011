"""LLGC label spreading (Zhou et al. 2004) on a kNN graph, via scikit-learn — the peer prior.

Configured as in Iscen et al. 2019 (label propagation for deep SSL): a sparse kNN graph
(``n_neighbors`` = 10), symmetrised (``W = max(A, A^T)``, LLGC assumes a symmetric affinity;
``symmetric=False`` keeps scikit-learn's directed ``kneighbors_graph``), ``alpha`` = 0.99.

Two traps of :class:`sklearn.semi_supervised.LabelSpreading` are handled here:

- its stopping rule compares the *summed* absolute change of the whole label matrix with
  ``tol`` (default 1e-3); with ``alpha`` close to 1 the change per step is small long before
  the labels have travelled across the graph, so the default stops early and leaves many
  rows with no label mass. We use ``tol=1e-9`` and ``max_iter=3000`` (0.99^3000 ≈ 1e-13), and
  the base class turns every row still without mass (a graph component with no labeled
  sample) into the uniform distribution with a warning;
- ``label_distributions_`` has one column per entry of ``classes_`` — only the classes present
  in the labeled set. The columns are mapped back to class ids, so a class missing from the
  selection gets a zero column instead of shifting every prediction.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from ..validate import Boolean, Interval
from .base import BasePropagator, PropagationWarning


class LabelSpreadingPropagator(BasePropagator):
    """LLGC label spreading on a kNN graph (scikit-learn ``LabelSpreading``).

    Parameters
    ----------
    n_neighbors : int, default=10
        Neighbours per sample in the kNN graph (lowered to ``n - 1`` on tiny data).
    alpha : float, default=0.99
        Clamping factor in (0, 1): the fraction of a row's mass that comes from its neighbours.
    max_iter : int, default=3000
    tol : float, default=1e-9
        Stop when the summed absolute change of the label matrix is below ``tol``.
    symmetric : bool, default=True
        Symmetrise the kNN graph (an edge if either end is among the other's neighbours).
    n_jobs : int or None, default=None
        Passed to scikit-learn's ``NearestNeighbors``.

    Attributes
    ----------
    n_iter_ : int
        Iterations run by scikit-learn.
    classes_ : ndarray of int64
        Classes present in the labeled set (the columns scikit-learn produced).
    coverage_ : float
        Fraction of rows that received label mass.
    n_uniform_ : int
        Rows without mass, set to uniform.
    """

    # alpha and tol take a bool as 0 / 1, as they always have
    _parameter_constraints = {
        "n_neighbors": [Interval(int, 1, None, message="must be an int >= 1")],
        "alpha": [Interval(numbers.Real, 0, 1, closed="neither", bool_ok=True)],
        "max_iter": [Interval(int, 1, None, message="must be an int >= 1")],
        "tol": [Interval(numbers.Real, 0, None, closed="left", bool_ok=True)],
        "symmetric": [Boolean()],
    }

    def __init__(self, *, n_neighbors=10, alpha=0.99, max_iter=3000, tol=1e-9, symmetric=True,
                 n_jobs=None):
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.symmetric = symmetric
        self.n_jobs = n_jobs

    def _propagate(self, X, labeled_idx, labels, num_classes, seed):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neighbors import NearestNeighbors
        from sklearn.semi_supervised import LabelSpreading

        n = X.shape[0]
        if n == 1:
            return np.eye(num_classes, dtype=np.float64)[labels]
        k = int(min(self.n_neighbors, n - 1))
        symmetric = bool(self.symmetric)
        n_jobs = self.n_jobs

        def knn_graph(A, B):
            # called by scikit-learn as kernel(X, X) during fit only
            nn = NearestNeighbors(n_neighbors=k, n_jobs=n_jobs).fit(A)
            W = nn.kneighbors_graph(A, k, mode="connectivity")
            if symmetric:
                W = W.maximum(W.T)
            return W.tocsr()

        y = np.full(n, -1, dtype=np.int64)
        y[labeled_idx] = labels
        model = LabelSpreading(kernel=knn_graph, alpha=float(self.alpha),
                               max_iter=int(self.max_iter), tol=float(self.tol),
                               n_jobs=self.n_jobs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X, y)
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                warnings.warn(f"label spreading did not converge in max_iter={self.max_iter} "
                              f"iterations (tol={self.tol}); raise max_iter",
                              PropagationWarning, stacklevel=4)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.n_iter_ = int(model.n_iter_)
        self.classes_ = np.asarray(model.classes_, dtype=np.int64)
        dist = np.asarray(model.label_distributions_, dtype=np.float64)
        out = np.zeros((n, num_classes), dtype=np.float64)
        out[:, self.classes_] = dist  # columns follow classes_, not class ids
        np.maximum(out, 0.0, out=out)
        return out
