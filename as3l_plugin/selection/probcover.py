"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy max coverage of
δ-balls.

Graph: a directed edge ``x -> y`` for every pair with Euclidean ``d(x, y) < delta``
(self-loops included). It is built in row blocks of ``chunk`` queries against all samples —
every block, including the last partial one, is processed (the reference code's
``range(N // batch_size)`` silently drops the tail block). Edges are stored as CSR arrays.

Greedy: the samples covered by ``labeled_idx`` (warm start) are marked covered; then each
step picks the sample with the most *uncovered* out-neighbours (ties: smallest index) and
marks its ball covered. Once every sample is covered (max degree 0) the remaining picks are
drawn uniformly at random (seeded) from the unselected samples, as the authors suggest.

Choosing δ automatically (``delta=None``)
-----------------------------------------
As in the ProbCover paper: δ is the largest radius at which at least ``purity`` (0.95) of
the balls are *pure* w.r.t. K-means pseudo-labels (a ball around x is pure when every
sample inside it has x's pseudo-label). With ``r(x)`` = distance from x to the nearest
sample of another pseudo-label, the ball ``B(x, δ)`` (open) is pure iff ``r(x) >= δ``, so
purity(δ) is the fraction of ``r(x) >= δ`` and the largest admissible δ is an order
statistic of ``r`` — computed exactly (one chunked all-pairs pass) instead of over a grid.
The pseudo-labels come from our seeded K-means with ``n_clusters`` clusters — the number of
classes, as in the paper; when unknown (``n_clusters=None``) ``budget`` is used (≥ the number
of classes in the usual one-label-per-class-or-more regime; larger K gives a smaller,
more conservative δ). The chosen δ is stored in ``delta_``.

Cost: the graph pass and the purity pass are ``O(n^2 d)`` each; memory is the edge list
(``max_edges`` guards against a δ so large that the graph would not fit).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..clustering import kmeans, pairwise_sqdist
from ..errors import ParameterError
from ..validate import Interval
from .base import BaseSampler


def _block_rows(n, chunk):
    return int(chunk) if chunk is not None else max(16, (1 << 23) // max(n, 1))


def nearest_other_label_dist(X, labels, chunk=None):
    """Euclidean distance from each row to the nearest row with a different label
    (``inf`` when there is none). float64 (n,)."""
    n = X.shape[0]
    step = _block_rows(n, chunk)
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, step):
        e = min(n, s + step)
        D = pairwise_sqdist(X[s:e], X)
        D[labels[s:e, None] == labels[None, :]] = np.inf
        out[s:e] = np.sqrt(D.min(axis=1).astype(np.float64))
    return out


def delta_from_purity(X, pseudo_labels, purity=0.95, chunk=None):
    """Largest δ such that a fraction ``>= purity`` of open δ-balls are pure."""
    r = np.sort(nearest_other_label_dist(X, pseudo_labels, chunk))
    n = r.size
    j = n - int(np.ceil(purity * n))
    j = min(max(j, 0), n - 1)
    return float(r[j])


def delta_graph(X, delta, chunk=None, max_edges=None):
    """CSR ``(indptr int64 (n+1,), indices int64 (E,))`` of edges ``d(x, y) < delta``."""
    n = X.shape[0]
    step = _block_rows(n, chunk)
    thr = np.float32(delta) ** 2
    rows_cnt = np.zeros(n, dtype=np.int64)
    cols = []
    total = 0
    for s in range(0, n, step):   # includes the tail block
        e = min(n, s + step)
        D = pairwise_sqdist(X[s:e], X)
        mask = D < thr
        mask[np.arange(e - s), np.arange(s, e)] = True  # self-loop even if delta == 0
        r, c = np.nonzero(mask)
        rows_cnt[s:e] = np.bincount(r, minlength=e - s)
        cols.append(c.astype(np.int64))
        total += c.size
        if max_edges is not None and total > max_edges:
            raise ParameterError(f"delta={delta:.4g} gives more than max_edges={max_edges} "
                                 "edges; choose a smaller delta (or raise max_edges)",
                                 field="delta")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(rows_cnt, out=indptr[1:])
    return indptr, np.concatenate(cols) if cols else np.empty(0, np.int64)


class ProbCoverSampler(BaseSampler):
    """Greedy maximum coverage of δ-balls.

    Parameters
    ----------
    delta : float, optional
        Ball radius (Euclidean, in feature units). Default: chosen by ball purity.
    purity : float, default=0.95
        Target fraction of pure balls when choosing δ.
    n_clusters : int, optional
        K of the K-means pseudo-labels used for purity (the number of classes when known);
        default ``budget``.
    chunk : int, optional
        Query rows per block of the all-pairs passes.
    max_edges : int, default=300_000_000
        Refuse graphs larger than this (memory guard, ~2.4 GB of indices).

    Attributes
    ----------
    delta_ : float
        δ used by the last call.
    coverage_ : float
        Fraction of samples within δ of a labeled or selected sample.
    n_edges_ : int
    """

    _parameter_constraints = {
        "delta": [None, Interval(numbers.Real, 0, None, closed="neither", finite=True,
                                 message="must be a float > 0 or None")],
        # a bool passes as 0 / 1, as it always has
        "purity": [Interval(numbers.Real, 0, 1, closed="right", bool_ok=True,
                            message="must be in (0, 1]")],
        "n_clusters": [None, Interval(int, 2, None)],
        "chunk": [None, Interval(int, 1, None)],
        "max_edges": [Interval(int, 1, None)],
    }

    def __init__(self, *, delta=None, purity=0.95, n_clusters=None, chunk=None,
                 max_edges=300_000_000):
        self.delta = delta
        self.purity = purity
        self.n_clusters = n_clusters
        self.chunk = chunk
        self.max_edges = max_edges

    def _select(self, X, budget, seed, labeled_idx):
        n = X.shape[0]
        if self.delta is None:
            K = min(n, self.n_clusters if self.n_clusters is not None else max(2, budget))
            pl = kmeans(X, K, seed=seed).labels
            delta = delta_from_purity(X, pl, float(self.purity), self.chunk)
            if not np.isfinite(delta) or delta <= 0:
                delta = float(np.finfo(np.float32).tiny)
        else:
            delta = float(self.delta)
        self.delta_ = delta
        indptr, indices = delta_graph(X, delta, self.chunk, self.max_edges)
        self.n_edges_ = int(indices.size)
        deg = np.diff(indptr).astype(np.int64)
        # in-edges (transpose CSR): distances of a pair computed in two blocks may differ in
        # the last bit, so the graph is not assumed symmetric
        rows = np.repeat(np.arange(n, dtype=np.int64), deg)
        order = np.argsort(indices, kind="stable")
        in_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(indices, minlength=n), out=in_ptr[1:])
        in_idx = rows[order]
        del rows, order
        covered = np.zeros(n, dtype=bool)
        taken = np.zeros(n, dtype=bool)
        taken[labeled_idx] = True

        def cover(sources):
            if len(sources) == 0:
                return
            nb = np.concatenate([indices[indptr[s]:indptr[s + 1]] for s in sources])
            new = np.unique(nb[~covered[nb]])
            if new.size == 0:
                return
            covered[new] = True
            inn = np.concatenate([in_idx[in_ptr[y]:in_ptr[y + 1]] for y in new])
            deg[:] -= np.bincount(inn, minlength=n)

        cover(labeled_idx)
        chosen = []
        while len(chosen) < budget:
            cand = np.where(taken, -1, deg)
            i = int(np.argmax(cand))
            if cand[i] <= 0:
                break
            chosen.append(i)
            taken[i] = True
            cover([i])
        if len(chosen) < budget:
            pool = np.flatnonzero(~taken)
            rng = np.random.default_rng(seed)
            chosen += rng.choice(pool, size=budget - len(chosen), replace=False).tolist()
        self.coverage_ = float(covered.mean())
        return np.asarray(chosen, dtype=np.int64)
