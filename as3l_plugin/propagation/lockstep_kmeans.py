"""Several constrained K-means runs on the same features, iterated in lockstep.

The paper's prior runs constrained seeded K-means at six K (10…60) on the same features.
Run one after the other, every Lloyd iteration of every run streams the whole feature
matrix through a thin matrix product (K ≤ 60 columns), which is memory-bound. Here all
unfinished runs share one pass per iteration: one product of each row chunk with the
concatenated centres of all runs (``sum(K)`` columns, compute-bound), then a per-run argmin
on its slice. Cluster sums are updated incrementally (float64), from the samples that changed
cluster only, which after the first iterations are few.

It is the same algorithm as :func:`as3l_plugin.clustering.kmeans` with ``init`` and
``fixed_labels`` applied to each run (same tie rule — smallest centre index —, same empty-cluster rule — re-seeded at the free sample farthest from its
centre, ties by index —, same stopping rules: labels unchanged, relative inertia gain
``<= inertia_tol`` or summed squared centre shift ``<= tol ×`` mean feature variance). Results
can differ from sequential runs in the last float bits (a different product shape), so an
exact distance tie may break differently; each path is deterministic on its own.
"""

from __future__ import annotations

import numpy as np

__all__ = ["constrained_kmeans_lockstep"]

#: float32 distance entries per row chunk (rows × sum(K)); 4M = 16 MB
_CHUNK_ENTRIES = 1 << 22


def _use_torch(backend):
    if backend == "numpy":
        return False
    try:
        import torch  # noqa: F401
        return True
    except ImportError:  # pragma: no cover
        return False


def _sqnorms(X):
    return np.einsum("ij,ij->i", X, X, dtype=np.float32)


def _mean_feature_variance(X, xsq):
    n, d = X.shape
    mu = np.zeros(d, dtype=np.float64)
    for s in range(0, n, 1 << 14):
        mu += X[s:s + (1 << 14)].sum(axis=0, dtype=np.float64)
    mu /= n
    return max(float(xsq.sum(dtype=np.float64)) / n - float(mu @ mu), 0.0) / d


class _Run:
    def __init__(self, K, centers, fixed):
        self.K = K
        self.centers = centers            # float32 (K, d)
        self.fixed = fixed                # int64 (n,), -1 = free
        self.is_fixed = fixed >= 0
        self.labels = None                # int64 (n,)
        self.sqd = None
        self.prev = None
        self.prev_inertia = np.inf
        self.sums = None                  # float64 (K, d)
        self.counts = None
        self.n_iter = 0
        self.final = False                # next assignment is the last one
        self.done = False


def _assign_all(X, xsq, runs, use_torch):
    """One pass over X: labels and squared distances of every run (fixed rows kept)."""
    n = X.shape[0]
    C = np.concatenate([r.centers for r in runs], axis=0)
    csq = _sqnorms(C)
    offs = np.cumsum([0] + [r.K for r in runs])
    step = int(max(256, min(n, _CHUNK_ENTRIES // C.shape[0])))
    for r in runs:
        r.new_labels = np.empty(n, dtype=np.int64)
        r.new_sqd = np.empty(n, dtype=np.float32)
    # one distance buffer reused for every chunk: repeated 16 MB allocations fragment the
    # heap and make the resident size creep up over the iterations
    buf = np.empty((min(n, step), C.shape[0]), dtype=np.float32)
    if use_torch:
        import torch
        Ct = torch.from_numpy(C)
        csq_t = torch.from_numpy(csq)
        buf_t = torch.from_numpy(buf)
    for s in range(0, n, step):
        e = min(n, s + step)
        D = buf[:e - s]
        if use_torch:
            torch.addmm(csq_t[None, :], torch.from_numpy(X[s:e]), Ct.T, alpha=-2.0,
                        out=buf_t[:e - s])
        else:
            np.matmul(X[s:e], C.T, out=D)
            D *= -2.0
            D += csq[None, :]
        rows = np.arange(e - s)
        for j, r in enumerate(runs):
            Dj = D[:, offs[j]:offs[j + 1]]
            lab = Dj.argmin(axis=1)                  # first index on ties
            f = r.fixed[s:e]
            m = f >= 0
            if m.any():
                lab[m] = f[m]
            r.new_labels[s:e] = lab
            np.maximum(Dj[rows, lab] + xsq[s:e], 0.0, out=r.new_sqd[s:e])


def _relocate_empty(X, r):
    counts = np.bincount(r.new_labels, minlength=r.K)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return
    free = ~r.is_fixed & (counts[r.new_labels] > 1)
    cand = np.flatnonzero(free)
    order = cand[np.lexsort((cand, -r.new_sqd[cand]))]
    for k, p in zip(empty, order):
        counts[r.new_labels[p]] -= 1
        r.new_labels[p] = k
        counts[k] = 1
        r.new_sqd[p] = 0.0
        r.centers[k] = X[p]


def _update_sums(X, r):
    """Cluster sums/counts for ``r.new_labels``: full the first time, then incremental.

    A block of rows contributes ``Delta @ X_block`` where ``Delta`` (K, rows) is the sparse
    difference of the new and old one-hot assignments (+1 new cluster, -1 old one), a
    single-threaded scipy product of ``O(rows × d)``; blocks are added to float64 sums in a
    fixed order, so the result does not depend on the thread count.
    """
    from scipy import sparse

    lab = r.new_labels
    n, d = X.shape
    step = 1 << 12  # rows per block: a gathered block is 4096 x d float32 (8 MB at d=512)
    if r.sums is None:
        r.sums = np.zeros((r.K, d), dtype=np.float64)
        blocks = [(slice(s, min(n, s + step)), None) for s in range(0, n, step)]
    else:
        rows = np.flatnonzero(lab != r.labels)
        blocks = [(rows[s:s + step], r.labels) for s in range(0, rows.size, step)]
    for sel, old in blocks:
        Xc = X[sel]
        b = Xc.shape[0]
        cols = np.arange(b)
        if old is None:
            delta = sparse.csr_matrix((np.ones(b, dtype=np.float32), (lab[sel], cols)),
                                      shape=(r.K, b))
        else:
            delta = sparse.csr_matrix(
                (np.r_[np.ones(b, dtype=np.float32), -np.ones(b, dtype=np.float32)],
                 (np.r_[lab[sel], old[sel]], np.r_[cols, cols])), shape=(r.K, b))
        r.sums += delta @ Xc
    r.counts = np.bincount(lab, minlength=r.K)


def constrained_kmeans_lockstep(X, specs, *, max_iter=50, tol=1e-4, inertia_tol=1e-4,
                                backend="auto", progress=None):
    """Run several constrained seeded K-means in lockstep (see the module docstring).

    Parameters
    ----------
    X : ndarray of float32, shape (n, d), C-contiguous
    specs : list of (init, fixed_labels)
        ``init`` float32 (K, d): initial centres; ``fixed_labels`` int64 (n,): -1 for free
        samples, else the sample's cluster, held in every assignment.
    max_iter : int
    tol, inertia_tol : float
    backend : {'auto', 'torch', 'numpy'}
    progress : callable, optional
        Called with the number of unfinished runs after every iteration.

    Returns
    -------
    list of (labels int64 (n,), n_iter int), one per spec.
    """
    use_torch = _use_torch(backend)
    X = np.ascontiguousarray(X, dtype=np.float32)
    xsq = _sqnorms(X)
    tol_abs = float(tol) * _mean_feature_variance(X, xsq)
    runs = [_Run(init.shape[0], np.array(init, dtype=np.float32), fixed)
            for init, fixed in specs]
    for _ in range(int(max_iter) + 1):
        active = [r for r in runs if not r.done]
        if not active:
            break
        _assign_all(X, xsq, active, use_torch)
        for r in active:
            inertia = float(r.new_sqd.sum(dtype=np.float64))
            if r.final or (r.prev is not None and (
                    np.array_equal(r.prev, r.new_labels)
                    or r.prev_inertia - inertia <= inertia_tol * inertia)) \
                    or r.n_iter >= max_iter:
                _relocate_empty(X, r)
                r.labels, r.done = r.new_labels, True
                continue
            _relocate_empty(X, r)
            _update_sums(X, r)
            new = r.centers.astype(np.float64)
            nz = r.counts > 0
            new[nz] = r.sums[nz] / r.counts[nz, None]
            new = new.astype(np.float32)
            shift = float(((new.astype(np.float64) - r.centers) ** 2).sum())
            r.centers = new
            r.n_iter += 1
            r.prev, r.prev_inertia = r.new_labels, inertia
            r.labels = r.new_labels
            if shift <= tol_abs:
                r.final = True
        if progress is not None:
            progress(sum(not r.done for r in runs))
    return [(r.labels, r.n_iter) for r in runs]
