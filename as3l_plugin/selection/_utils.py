"""Small deterministic helpers shared by the samplers."""

from __future__ import annotations

import numpy as np

from ..clustering import _sqnorms, pairwise_sqdist


def sqdist_to(X, x, xsq=None):
    """Squared distances float32 (n,) from every row of ``X`` to one point ``x`` (d,):
    :func:`as3l_plugin.clustering.pairwise_sqdist` with one column, numpy's product and
    ``|x|^2`` as ``x @ x`` (the k-center and k-medoids picks are pinned by the determinism
    tests). ``xsq`` lets a loop reuse the row norms of ``X``.
    """
    x = np.asarray(x, dtype=np.float32)
    return pairwise_sqdist(X, x[None, :], backend="numpy", a_sqnorms=xsq,
                           b_sqnorms=np.array([x @ x], dtype=np.float32))[:, 0]


def nearest_to_centre(X, members, centre):
    """Member closest to ``centre`` (ties: smallest index)."""
    d = sqdist_to(X[members], centre.astype(np.float32))
    return int(members[np.flatnonzero(d == d.min())].min())


def typicality(Xc, k_nn):
    """TypiClust typicality of every row: 1 / (mean Euclidean distance to its k nearest
    neighbours among the rows, self excluded). One row → 1.0 (float64 (m,))."""
    from ..clustering import knn
    m = Xc.shape[0]
    if m < 2:
        return np.ones(m, dtype=np.float64)
    k = int(max(1, min(k_nn, m - 1)))
    dist, _ = knn(Xc, k)
    return 1.0 / (dist.astype(np.float64).mean(axis=1) + 1e-8)


def kcenter_fill(X, chosen, labeled, n_more, xsq=None):
    """Add ``n_more`` samples by k-center greedy from ``chosen`` ∪ ``labeled``.

    Deterministic: the next sample is the one farthest from all current centres (ties:
    smallest index); with no centre at all it starts at the sample nearest the mean.
    """
    n = X.shape[0]
    if n_more <= 0:
        return []
    if xsq is None:
        xsq = _sqnorms(X)
    centres = list(chosen) + [int(i) for i in labeled]
    blocked = np.zeros(n, dtype=bool)
    blocked[centres] = True
    out = []
    if centres:
        mind = np.full(n, np.inf, dtype=np.float32)
        for c in centres:
            np.minimum(mind, sqdist_to(X, X[c], xsq), out=mind)
    else:
        mu = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        d0 = sqdist_to(X, mu, xsq)
        first = int(np.argmin(d0))
        out.append(first)
        blocked[first] = True
        mind = sqdist_to(X, X[first], xsq)
    while len(out) < n_more:
        cand = np.where(blocked, -np.inf, mind)
        nxt = int(np.argmax(cand))
        if blocked[nxt]:
            break
        out.append(nxt)
        blocked[nxt] = True
        np.minimum(mind, sqdist_to(X, X[nxt], xsq), out=mind)
    return out
