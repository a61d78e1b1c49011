"""The one fast, seeded, deterministic K-means / kNN used by selection and propagation.

Everything here works on float32 ``(n, d)`` features without float64 copies of ``X``;
distances are ``|x|^2 - 2 x.c + |c|^2`` computed with one matrix product per fixed-size
chunk of rows, so memory stays ``O(chunk * K)`` on top of ``X`` itself and the work is one
BLAS call per chunk.

Determinism
-----------
Results depend only on ``(X, arguments, seed)``:

- randomness comes from ``numpy.random.default_rng(seed)`` only;
- chunk sizes depend on ``n`` and ``K`` only (never on the thread count);
- ``argmin`` / ``argmax`` ties go to the smallest index; empty clusters are re-seeded at the
  free point farthest from its centre (ties: smallest index);
- cluster sums are accumulated chunk by chunk in a fixed order (float32 inside a chunk,
  float64 across chunks).

The test-suite checks byte-identical labels across runs, processes and thread counts.

Backends
--------
``'torch'`` (the default, ``'auto'``) runs the matrix products with torch on the CPU (MKL)
and takes the argmins with numpy on the same buffer, or everything on a torch ``device``
(CUDA); ``'numpy'`` uses numpy's BLAS (no torch needed); ``'faiss'`` uses ``faiss.knn`` /
``IndexFlatL2`` for the nearest-centre and kNN searches. All backends return the same types.

Scaling
-------
One Lloyd iteration costs ``2 n d K`` flops plus one pass over ``X`` for the sums. Beyond
``fit_rows`` rows (default ``max(FIT_ROWS_MIN, FIT_ROWS_PER_CLUSTER * K)``) the iterations
run on a seeded subsample and every row is assigned once at the end (:func:`kmeans`).
Memory is ``X`` (which may be a read-only memmap) plus ``O(chunk*K + K*d)`` plus the labels;
fixed samples are held as ``(rows, clusters)`` pairs. ``knn`` is ``O(n^2 d)`` and is meant
for per-cluster or moderate ``n`` (use ``backend='faiss'`` beyond that).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputError, ParameterError
from .validate import check_int

__all__ = ["KMeansResult", "kmeans", "constrained_kmeans_lockstep", "assign", "knn",
           "pairwise_sqdist", "kmeans_plusplus"]

BACKENDS = ("auto", "torch", "numpy", "faiss")
# number of float32 distance entries computed per chunk (rows * K); 4M entries = 16 MB
_CHUNK_ENTRIES = 1 << 22
#: ``fit_rows='auto'``: Lloyd runs on all rows up to ``max(FIT_ROWS_MIN, FIT_ROWS_PER_CLUSTER
#: * K)`` rows; beyond that on a seeded subsample of that size, then every row is assigned once
FIT_ROWS_MIN = 1 << 16
FIT_ROWS_PER_CLUSTER = 256


@dataclass
class KMeansResult:
    """Output of :func:`kmeans`.

    Attributes
    ----------
    centers : ndarray of float32, shape (K, d)
    labels : ndarray of int64, shape (n,)
        Nearest centre of every sample (fixed samples keep their fixed cluster).
    inertia : float
        Sum of squared distances of samples to their assigned centre.
    n_iter : int
        Lloyd iterations run (best of ``n_init`` restarts).
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


# --------------------------------------------------------------------------- helpers
def _check_X(X, name="X"):
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"expected a non-empty 2-D array (n_samples, n_features), got shape "
                         f"{X.shape}", field=name)
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        X = np.ascontiguousarray(X, dtype=np.float32)
    return X


def _resolve_backend(backend):
    if backend not in BACKENDS:
        raise ParameterError(f"backend={backend!r} is not one of {BACKENDS}", field="backend")
    if backend == "auto":
        try:
            import torch  # noqa: F401
            return "torch"
        except ImportError:  # pragma: no cover - torch is a hard dependency
            return "numpy"
    return backend


def _chunk_rows(n, k):
    return int(max(256, min(n, _CHUNK_ENTRIES // max(int(k), 1))))


def fit_size(n, k, fit_rows="auto"):
    """Rows the Lloyd iterations of a ``k``-cluster run on ``n`` rows use (see :func:`kmeans`).

    ``fit_rows``: ``'auto'`` (``max(FIT_ROWS_MIN, FIT_ROWS_PER_CLUSTER * k)``), ``None`` (all
    rows) or an int ``>= k``. Returns an int in ``[min(n, k), n]``.
    """
    if fit_rows is None:
        return int(n)
    if isinstance(fit_rows, str):
        if fit_rows != "auto":
            raise ParameterError(f"fit_rows={fit_rows!r} must be 'auto', None or an int",
                                 field="fit_rows")
        m = max(FIT_ROWS_MIN, FIT_ROWS_PER_CLUSTER * int(k))
    else:
        m = check_int(fit_rows, "fit_rows", low=max(1, int(k)))
    return int(min(n, m))


def fit_subsample(n, m, seed, keep=None):
    """Sorted int64 row numbers of the seeded fitting subsample: ``m`` rows drawn uniformly
    without replacement from ``range(n)`` (a random stream of its own, so k-means++ seeding
    with the same ``seed`` is unaffected), plus every row of ``keep`` (e.g. fixed samples)."""
    rng = np.random.default_rng([int(seed), 0x5EED_F17])
    rows = np.sort(rng.choice(n, size=int(m), replace=False).astype(np.int64))
    if keep is not None and np.size(keep):
        rows = np.union1d(rows, np.asarray(keep, dtype=np.int64))
    return rows


def _tensor(a):
    """``torch.from_numpy(a)`` without copying, also for a read-only array (a ``np.load``
    memmap): torch only reads these tensors, so its non-writable warning is silenced."""
    import torch
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def _matmul_t(A, B, backend):
    """``A @ B.T`` for float32 C-contiguous arrays."""
    if backend == "torch":
        return _tensor(A).matmul(_tensor(B).T).numpy()
    return A @ B.T


def _sqnorms(X):
    return np.einsum("ij,ij->i", X, X, dtype=np.float32)


def count_distinct_rows(X, *, at_least=None) -> int:
    """Number of distinct rows of ``X`` (exact, byte-wise; ``-0.0`` and ``0.0`` differ).

    With ``at_least``, the count of distinct leading column pairs (a lower bound, found in
    milliseconds) is returned as soon as it reaches ``at_least``; only data with many
    repeated rows pays for the exact count (one sort of the rows as byte strings).
    """
    X = np.ascontiguousarray(X)
    n, d = X.shape
    if at_least is not None and d > 2:
        head = np.ascontiguousarray(X[:, :2]).view(np.dtype((np.void, 2 * X.itemsize))).ravel()
        lower = int(np.unique(head).size)
        if lower >= at_least:
            return lower
    return int(np.unique(X.view(np.dtype((np.void, d * X.itemsize))).ravel()).size)


def pairwise_sqdist(A, B, *, backend="auto", a_sqnorms=None, b_sqnorms=None):
    """Squared Euclidean distances between rows of ``A`` and rows of ``B``.

    Parameters
    ----------
    A : ndarray of shape (m, d)
    B : ndarray of shape (p, d)
    a_sqnorms, b_sqnorms : ndarray of float32, shape (m,) / (p,), optional
        ``|a|^2`` / ``|b|^2`` when the caller has them (a loop over many ``B`` reuses the
        norms of ``A``); default computed here.

    Returns
    -------
    D : ndarray of float32, shape (m, p), clipped at 0.
    """
    A = _check_X(A, "A")
    B = _check_X(B, "B")
    if A.shape[1] != B.shape[1]:
        raise InputError(f"A has {A.shape[1]} features but B has {B.shape[1]}", field="B")
    be = _resolve_backend(backend)
    be = "numpy" if be == "faiss" else be
    D = _matmul_t(A, B, be)
    D *= -2.0
    D += (_sqnorms(A) if a_sqnorms is None else a_sqnorms)[:, None]
    D += (_sqnorms(B) if b_sqnorms is None else b_sqnorms)[None, :]
    np.maximum(D, 0.0, out=D)
    return D


# --------------------------------------------------------------------------- assignment
def _fixed_rows(fixed):
    """Fixed samples as ``(rows, clusters)``: int64 row numbers (sorted) and their clusters.

    ``fixed`` is None, an int array (n,) with ``-1`` = free, or already such a pair. None when
    no sample is fixed. (Memory: the fixed rows only, not one entry per row.)
    """
    if fixed is None:
        return None
    if isinstance(fixed, tuple):
        rows, clusters = (np.asarray(a, dtype=np.int64) for a in fixed)
    else:
        fixed = np.asarray(fixed)
        rows = np.flatnonzero(fixed >= 0).astype(np.int64)
        clusters = fixed[rows].astype(np.int64)
    if rows.size == 0:
        return None
    if rows.size > 1 and not (np.diff(rows) > 0).all():
        order = np.argsort(rows, kind="stable")
        rows, clusters = rows[order], clusters[order]
    return rows, clusters


class _Run:
    """State of one Lloyd run: its centres, fixed samples and stopping bookkeeping."""

    def __init__(self, centers, fixed=None):
        self.K = centers.shape[0]
        self.centers = centers            # float32 (K, d), updated in place by relocation
        self.fixed = _fixed_rows(fixed)   # (rows int64 sorted, clusters int64), or None
        self.labels = None                # int64 (n,) of the last assignment
        self.sqd = None                   # float32 (n,)
        self.inertia = np.inf
        self.prev = None                  # labels of the previous assignment
        self.prev_inertia = np.inf
        self.sums = None                  # float64 (K, d), incremental sums only
        self.counts = None
        self.n_iter = 0
        self.final = False                # next assignment is the last one
        self.done = False


def _assign_faiss(X, centers):
    import faiss
    D, I = faiss.knn(X, centers, 1)
    return I[:, 0].astype(np.int64), np.maximum(D[:, 0], 0.0).astype(np.float32)


def _assign_runs(X, xsq, runs, backend, device=None):
    """Nearest centre of every row for every run; returns [(labels int64, sqdist float32)].

    One pass over ``X``: each chunk of rows is multiplied once with the concatenated centres
    of all runs (``sum(K)`` columns), then every run takes the argmin of its own columns
    (first index on ties; fixed rows keep their cluster). With one run this is the plain
    nearest-centre assignment. ``device`` (torch backend only): where the chunk products
    run; chunks of ``X`` are copied there one at a time, ``X`` itself stays in host memory.
    Backend ``'faiss'`` searches with ``faiss.knn`` for runs without fixed samples and uses
    numpy products for the others.
    """
    if backend == "faiss":
        out = [None] * len(runs)
        rest = [j for j, r in enumerate(runs) if r.fixed is not None]
        for j, r in enumerate(runs):
            if r.fixed is None:
                out[j] = _assign_faiss(X, r.centers)
        if rest:
            for j, res in zip(rest, _assign_runs(X, xsq, [runs[j] for j in rest], "numpy")):
                out[j] = res
        return out
    n = X.shape[0]
    C = runs[0].centers if len(runs) == 1 else np.concatenate([r.centers for r in runs])
    csq = _sqnorms(C)
    offs = np.cumsum([0] + [r.K for r in runs])
    step = _chunk_rows(n, C.shape[0])
    out = [(np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32)) for _ in runs]
    if backend == "torch" and device is not None and _device_type(device) != "cpu":
        return _assign_runs_device(X, xsq, runs, C, csq, offs, step, out, device)
    buf = np.empty((min(n, step), C.shape[0]), dtype=np.float32)
    if backend == "torch":
        import torch
        Ct, csq_t, buf_t = torch.from_numpy(C), torch.from_numpy(csq), torch.from_numpy(buf)
    for s in range(0, n, step):
        e = min(n, s + step)
        D = buf[:e - s]
        if backend == "torch":  # the product by torch (MKL); the argmin by numpy (faster)
            torch.addmm(csq_t[None, :], _tensor(X[s:e]), Ct.T, alpha=-2.0, out=buf_t[:e - s])
        else:
            np.matmul(X[s:e], C.T, out=D)       # (chunk, sum K)
            D *= -2.0
            D += csq[None, :]
        rows = np.arange(e - s)
        for j, r in enumerate(runs):
            Dj = D[:, offs[j]:offs[j + 1]]
            lab = Dj.argmin(axis=1)          # first index on ties
            if r.fixed is not None:
                frows, fcl = r.fixed
                a, b = np.searchsorted(frows, (s, e))
                if b > a:
                    lab[frows[a:b] - s] = fcl[a:b]
            labels, sqd = out[j]
            labels[s:e] = lab
            np.maximum(Dj[rows, lab] + xsq[s:e], 0.0, out=sqd[s:e])
    return out


def _device_type(device) -> str:
    """``'cpu'``, ``'cuda'``, … of a device given as a string or ``torch.device``."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def _assign_runs_device(X, xsq, runs, C, csq, offs, step, out, device):
    """:func:`_assign_runs` with the products and argmins on a torch ``device`` (CUDA):
    chunks of ``X`` are copied there one at a time, ``X`` stays in host memory."""
    import torch
    n = X.shape[0]
    dev = torch.device(device)
    Ct = torch.from_numpy(C).to(dev)
    csq_t = torch.from_numpy(csq).to(dev)
    xsq_t = torch.from_numpy(xsq)
    # one distance buffer reused for every chunk: repeated 16 MB allocations fragment
    # the heap and make the resident size creep up over the iterations
    buf = torch.empty((min(n, step), C.shape[0]), dtype=torch.float32, device=dev)
    fixed_t = [None if r.fixed is None else
               (r.fixed[0], torch.from_numpy(r.fixed[1]).to(dev)) for r in runs]
    out_t = [(torch.from_numpy(lab), torch.from_numpy(sqd)) for lab, sqd in out]
    for s in range(0, n, step):
        e = min(n, s + step)
        D = torch.addmm(csq_t[None, :], _tensor(X[s:e]).to(dev), Ct.T, alpha=-2.0,
                        out=buf[:e - s])
        for j in range(len(runs)):
            Dj = D[:, offs[j]:offs[j + 1]]
            vals, lab = Dj.min(dim=1)        # first index on ties
            if fixed_t[j] is not None:
                frows, fcl = fixed_t[j]
                a, b = np.searchsorted(frows, (s, e))
                if b > a:
                    loc = torch.from_numpy(frows[a:b] - s).to(dev)
                    lab[loc] = fcl[a:b]
                    vals[loc] = Dj[loc, fcl[a:b]]
            lab_t, sqd_t = out_t[j]
            lab_t[s:e] = lab.cpu()
            torch.clamp_min(vals.cpu() + xsq_t[s:e], 0.0, out=sqd_t[s:e])
    return out


def _assign(X, centers, backend, fixed=None, xsq=None, device=None):
    """Nearest centre per row; returns labels int64 (n,), sqdist float32 (n,)."""
    if xsq is None:
        xsq = _sqnorms(X)
    return _assign_runs(X, xsq, [_Run(centers, fixed)], backend, device)[0]


def assign(X, centers, *, backend="auto"):
    """Assign every row of ``X`` to its nearest centre (chunked, memory ``O(chunk*K)``).

    Parameters
    ----------
    X : ndarray of shape (n, d)
    centers : ndarray of shape (K, d)

    Returns
    -------
    labels : ndarray of int64, shape (n,)
        Index of the nearest centre (smallest index on ties).
    sqdist : ndarray of float32, shape (n,)
        Squared distance to that centre.
    """
    X = _check_X(X)
    centers = _check_X(centers, "centers")
    if centers.shape[1] != X.shape[1]:
        raise InputError(f"centers have {centers.shape[1]} features but X has {X.shape[1]}",
                         field="centers")
    return _assign(X, centers, _resolve_backend(backend))


# --------------------------------------------------------------------------- kNN
def knn(X, k, *, chunk=None, backend="auto"):
    """Exact k nearest neighbours of every row of ``X`` among the other rows.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    k : int
        Neighbours per row, ``1 <= k <= n - 1``. The row itself is excluded (by index, so an
        exact duplicate of a row still counts as a neighbour).
    chunk : int, optional
        Query rows per block; memory is ``O(chunk * n)``. Default keeps a block at ~64 MB.

    Returns
    -------
    dist : ndarray of float32, shape (n, k)
        Euclidean (not squared) distances, ascending.
    idx : ndarray of int64, shape (n, k)
        Neighbour indices; equal distances are ordered by index.
    """
    X = _check_X(X)
    n = X.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ParameterError(f"k={k!r} must be an int in [1, n_samples-1={n - 1}]", field="k")
    k = int(k)
    be = _resolve_backend(backend)
    if chunk is None:
        chunk = max(16, (1 << 24) // n)
    chunk = int(chunk)
    if chunk < 1:
        raise ParameterError(f"chunk={chunk} must be >= 1", field="chunk")
    dist = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    if be == "faiss":
        import faiss
        D, I = faiss.knn(X, X, k + 1)
        for i in range(n):  # drop self (wherever faiss put it)
            row = I[i]
            keep = row != i
            r, dd = row[keep][:k], D[i][keep][:k]
            order = np.lexsort((r, dd))
            idx[i], dist[i] = r[order], np.sqrt(np.maximum(dd[order], 0.0))
        return dist, idx
    xsq = _sqnorms(X)
    if be == "torch":
        import torch
        Xt = _tensor(X)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        if be == "torch":
            D = _tensor(X[s:e]).matmul(Xt.T)
            D.mul_(-2.0).add_(torch.from_numpy(xsq)[None, :]).add_(torch.from_numpy(xsq[s:e])[:, None])
            D[torch.arange(e - s), torch.arange(s, e)] = float("inf")
            vals, inds = torch.topk(D, k, dim=1, largest=False, sorted=True)
            vals, inds = vals.numpy(), inds.numpy().astype(np.int64)
        else:
            D = X[s:e] @ X.T
            D *= -2.0
            D += xsq[None, :]
            D += xsq[s:e, None]
            D[np.arange(e - s), np.arange(s, e)] = np.inf
            part = np.argpartition(D, k - 1, axis=1)[:, :k]
            vals = np.take_along_axis(D, part, axis=1)
            inds = part.astype(np.int64)
        for r in range(e - s):  # order (distance, index) for a stable, documented result
            o = np.lexsort((inds[r], vals[r]))
            idx[s + r] = inds[r][o]
            dist[s + r] = vals[r][o]
    np.sqrt(np.maximum(dist, 0.0, out=dist), out=dist)
    return dist, idx


# --------------------------------------------------------------------------- k-means++
def kmeans_plusplus(X, n_clusters, *, seed=0, init_size=None, centers0=None, backend="auto"):
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, greedy variant as scikit-learn).

    To stay cheap at large ``n`` the seeding runs on a seeded random subsample of
    ``init_size`` rows (default ``min(n, max(4096, 64 * K))``); Lloyd iterations on all rows
    follow in :func:`kmeans`.

    Parameters
    ----------
    X : ndarray of float32, shape (n, d)
    n_clusters : int
    centers0 : ndarray of float32, shape (m, d), optional
        Centres already fixed (e.g. seed-cluster means); the remaining ``K - m`` are drawn
        with potentials measured against them.

    Returns
    -------
    centers : ndarray of float32, shape (K, d)
    """
    X = _check_X(X)
    be = _resolve_backend(backend)
    be = "numpy" if be == "faiss" else be
    n, d = X.shape
    K = int(n_clusters)
    rng = np.random.default_rng(seed)
    m = min(n, max(4096, 64 * K) if init_size is None else max(K, int(init_size)))
    sub = X if m >= n else X[np.sort(rng.choice(n, size=m, replace=False))]
    xsq = _sqnorms(sub)
    centers = np.empty((K, d), dtype=np.float32)
    n0 = 0
    if centers0 is not None and len(centers0):
        n0 = len(centers0)
        centers[:n0] = centers0
        closest = pairwise_sqdist(sub, centers[:n0], backend=be).min(axis=1).astype(np.float64)
    else:
        first = int(rng.integers(sub.shape[0]))
        centers[0] = sub[first]
        closest = pairwise_sqdist(sub, sub[first:first + 1], backend=be)[:, 0].astype(np.float64)
        n0 = 1
    n_trials = 2 + int(math.log(K))
    for c in range(n0, K):
        pot = closest.sum()
        if pot <= 0:  # all points coincide with centres: take unused rows in index order
            cand = np.array([c % sub.shape[0]])
        else:
            cum = np.cumsum(closest)
            r = rng.random(n_trials) * cum[-1]
            cand = np.minimum(np.searchsorted(cum, r, side="right"), sub.shape[0] - 1)
        D = _matmul_t(sub, sub[cand], be)
        D *= -2.0
        D += xsq[:, None]
        D += xsq[cand][None, :]
        np.maximum(D, 0.0, out=D)
        newpot = np.minimum(D.astype(np.float64), closest[:, None]).sum(axis=0)
        best = int(np.argmin(newpot))
        centers[c] = sub[cand[best]]
        closest = np.minimum(closest, D[:, best].astype(np.float64))
    return centers


# --------------------------------------------------------------------------- Lloyd
def _sums(X, labels, K, be, step, device=None):
    """Per-cluster sums (float64, accumulated over fixed chunks) and counts."""
    d = X.shape[1]
    sums = np.zeros((K, d), dtype=np.float64)
    if be == "torch":
        import torch
        dev = torch.device("cpu" if device is None else device)
        acc = torch.zeros((K, d), dtype=torch.float32, device=dev)
        for s in range(0, X.shape[0], step):
            e = min(X.shape[0], s + step)
            acc.zero_()
            acc.index_add_(0, torch.from_numpy(labels[s:e]).to(dev),
                           _tensor(X[s:e]).to(dev))
            sums += acc.cpu().numpy()
    else:
        for s in range(0, X.shape[0], step):
            e = min(X.shape[0], s + step)
            part = np.zeros((K, d), dtype=np.float32)
            np.add.at(part, labels[s:e], X[s:e])
            sums += part
    counts = np.bincount(labels, minlength=K)
    return sums, counts


def _sums_incremental(X, r, labels):
    """Cluster sums/counts of ``labels`` for run ``r``: full the first time, then updated
    from the rows whose label changed since ``r.prev`` (after the first iterations, few).

    A block of rows contributes ``Delta @ X_block`` where ``Delta`` (K, rows) is the sparse
    difference of the new and old one-hot assignments (+1 new cluster, -1 old one), a
    single-threaded scipy product of ``O(rows x d)``; blocks are added to float64 sums in a
    fixed order, so the result does not depend on the thread count.
    """
    from scipy import sparse

    n, d = X.shape
    step = 1 << 12  # rows per block: a gathered block is 4096 x d float32 (8 MB at d=512)
    if r.sums is None:
        r.sums = np.zeros((r.K, d), dtype=np.float64)
        blocks = [(slice(s, min(n, s + step)), None) for s in range(0, n, step)]
    else:
        rows = np.flatnonzero(labels != r.prev)
        blocks = [(rows[s:s + step], r.prev) for s in range(0, rows.size, step)]
    for sel, old in blocks:
        Xc = X[sel]
        b = Xc.shape[0]
        cols = np.arange(b)
        if old is None:
            delta = sparse.csr_matrix((np.ones(b, dtype=np.float32), (labels[sel], cols)),
                                      shape=(r.K, b))
        else:
            delta = sparse.csr_matrix(
                (np.r_[np.ones(b, dtype=np.float32), -np.ones(b, dtype=np.float32)],
                 (np.r_[labels[sel], old[sel]], np.r_[cols, cols])), shape=(r.K, b))
        r.sums += delta @ Xc
    return r.sums, np.bincount(labels, minlength=r.K)


def _colsum(X, be):
    """Column sums as float64 (d,), accumulated over fixed row chunks (``be='float64'``:
    each chunk summed in float64 by numpy)."""
    out = np.zeros(X.shape[1], dtype=np.float64)
    step = 1 << 14
    for s in range(0, X.shape[0], step):
        if be == "torch":
            import torch
            out += _tensor(X[s:s + step]).sum(dim=0).numpy()
        elif be == "float64":
            out += X[s:s + step].sum(axis=0, dtype=np.float64)
        else:
            out += X[s:s + step].sum(axis=0)
    return out


def _mean_feature_variance(X, xsq, be):
    """``(E|x|^2 - |E x|^2) / d``, from the row norms computed anyway (``tol``'s scale)."""
    n, d = X.shape
    mu = _colsum(X, be) / n
    return max(float(xsq.sum(dtype=np.float64)) / n - float(mu @ mu), 0.0) / d


def _relocate_empty(X, labels, sqd, centers, K, fixed):
    """Re-seed empty clusters at the free points farthest from their centre (in place)."""
    counts = np.bincount(labels, minlength=K)
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return 0
    free = np.ones(X.shape[0], dtype=bool)
    if fixed is not None:
        free[_fixed_rows(fixed)[0]] = False
    # don't take the sole member of a cluster
    free &= counts[labels] > 1
    cand = np.flatnonzero(free)
    order = cand[np.lexsort((cand, -sqd[cand]))]  # farthest first, ties by index
    moved = 0
    for k, p in zip(empty, order):
        counts[labels[p]] -= 1
        labels[p] = k
        counts[k] = 1
        sqd[p] = 0.0
        centers[k] = X[p]
        moved += 1
    return moved


def _lloyd_runs(X, xsq, runs, max_iter, tol_abs, inertia_tol, be, device=None,
                incremental=False, progress=None):
    """Lloyd iterations of every run in ``runs`` (in place), unfinished runs in lockstep.

    Each iteration assigns all unfinished runs in one pass (:func:`_assign_runs`). A run
    stops after the assignment that follows ``max_iter`` centre updates or a centre shift
    ``<= tol_abs``, or at an assignment whose labels equal the previous ones or whose
    inertia gain is ``<= inertia_tol`` times its value; empty clusters are re-seeded after
    every assignment. Cluster sums: per fixed row chunk (float32 inside, float64 across;
    torch ``index_add_``), or with ``incremental`` from the rows that changed cluster only
    (:func:`_sums_incremental`, scipy, CPU).
    """
    n = X.shape[0]
    sums_be = be if be != "faiss" else "torch"
    for _ in range(int(max_iter) + 1):
        active = [r for r in runs if not r.done]
        if not active:
            break
        for r, (labels, sqd) in zip(active, _assign_runs(X, xsq, active, be, device)):
            inertia = float(sqd.sum(dtype=np.float64))
            stop = (r.final or r.n_iter >= max_iter
                    or (r.prev is not None and (np.array_equal(r.prev, labels)
                                                or r.prev_inertia - inertia
                                                <= inertia_tol * inertia)))
            _relocate_empty(X, labels, sqd, r.centers, r.K, r.fixed)
            if stop:
                r.labels, r.sqd, r.done = labels, sqd, True
                r.inertia = float(sqd.sum(dtype=np.float64))
                continue
            if incremental:
                sums, counts = _sums_incremental(X, r, labels)
            else:
                sums, counts = _sums(X, labels, r.K, sums_be, _chunk_rows(n, r.K), device)
            new = r.centers.astype(np.float64)
            nz = counts > 0
            new[nz] = sums[nz] / counts[nz, None]
            new = new.astype(np.float32)
            shift = float(((new.astype(np.float64) - r.centers) ** 2).sum())
            r.centers = new
            r.n_iter += 1
            r.prev, r.prev_inertia = labels, inertia
            r.labels = labels
            if shift <= tol_abs:
                r.final = True
        if progress is not None:
            progress(sum(not r.done for r in runs))
    return runs


def _finish_all_rows(X, runs, be, device=None):
    """Assign every row of ``X`` to the fitted centres of each run (fixed rows keep their
    cluster), re-seed empty clusters, set ``labels`` / ``inertia`` (in place). One pass per
    run, so that only one run's float32 distances (n,) exist at a time."""
    xsq = _sqnorms(X)
    for r in runs:
        labels, sqd = _assign_runs(X, xsq, [r], be, device)[0]
        _relocate_empty(X, labels, sqd, r.centers, r.K, r.fixed)
        r.labels, r.inertia = labels, float(sqd.sum(dtype=np.float64))
        del sqd
    return runs


def _lloyd(X, centers, max_iter, tol_abs, inertia_tol, be, fixed, xsq, device=None):
    r = _lloyd_runs(X, xsq, [_Run(centers, fixed)], max_iter, tol_abs, inertia_tol, be,
                    device)[0]
    return KMeansResult(centers=r.centers, labels=r.labels, inertia=r.inertia,
                        n_iter=r.n_iter)


def kmeans(X, n_clusters, *, seed=0, n_init=1, max_iter=50, tol=1e-4, inertia_tol=1e-4,
           init=None, fixed_labels=None, init_size=None, backend="auto", device=None,
           fit_rows="auto"):
    """Seeded, deterministic Lloyd K-means, optionally with samples held in fixed clusters.

    Parameters
    ----------
    X : array-like of shape (n, d)
        Converted to float32 (no copy when already float32 C-contiguous).
    n_clusters : int
        ``K``, ``1 <= K <= n``.
    seed : int
        Seeds k-means++ (restart ``r`` uses seed ``seed * 1_000_003 + r``).
    n_init : int
        Restarts; the lowest inertia wins (first on ties). Ignored when ``init`` is given.
    max_iter : int
        Lloyd iterations (centre updates) at most.
    tol : float
        Stop when the summed squared centre shift is ``<= tol * mean feature variance``
        (scikit-learn's rule).
    inertia_tol : float
        Also stop when an assignment step lowered the inertia by ``<= inertia_tol`` times
        its value (``0`` disables). On overlapping data Lloyd creeps for tens of iterations
        after the partition has settled (e.g. 50,000 x 512, K=100: 1e-4 is reached after
        ~10 iterations, within 0.03% of the inertia at full convergence after ~45); this
        rule is what keeps the offline stage fast. Iteration also stops when the labels no
        longer change.
    init : ndarray of float32, shape (K, d), optional
        Initial centres; default greedy k-means++ (see :func:`kmeans_plusplus`).
    fixed_labels : ndarray of int64, shape (n,), optional
        ``-1`` = free; otherwise the sample's cluster, held fixed in every assignment step.
        Constrained seeded K-means (Basu et al. 2002) is ``init`` = seed means plus
        ``fixed_labels`` for the seeds. Without ``init``, clusters holding fixed samples start
        at the mean of those samples and the others are k-means++-seeded around them.
    init_size : int, optional
        Rows used for k-means++ seeding (default ``min(n, max(4096, 64 K))``).
    backend : {'auto', 'torch', 'numpy', 'faiss'}
    device : str or torch.device, optional
        Torch device of the Lloyd iterations' products and sums (``'cuda'``, ``'cuda:1'``);
        default the CPU. Needs the torch backend (``'auto'`` or ``'torch'``); a CUDA device
        that is not available is an error, never a silent CPU run. ``X`` stays in host
        memory and is streamed to the device chunk by chunk; k-means++ seeding runs on the
        CPU.
    fit_rows : 'auto', int or None
        Rows the Lloyd iterations run on. With more rows than that, the centres are fitted
        (seeding, iterations, restarts) on a seeded uniform subsample of that many rows plus
        every fixed sample (:func:`fit_subsample`), then every row is assigned to them once
        (fixed samples keep their cluster; an empty cluster is re-seeded as above); ``labels``
        and ``inertia`` are those of all rows, ``n_iter`` the subsample's. ``'auto'`` (default)
        is ``max(FIT_ROWS_MIN, FIT_ROWS_PER_CLUSTER * K)`` = ``max(65536, 256 K)`` (faiss'
        256 points per centroid, with a floor), so data sets of up to 65,536 rows always use
        every row; ``None`` always uses every row.

    Returns
    -------
    KMeansResult
        ``centers`` float32 (K, d), ``labels`` int64 (n,), ``inertia`` float, ``n_iter`` int.
        An empty cluster is re-seeded at the free sample farthest from its centre.
    """
    X = _check_X(X)
    n, d = X.shape
    K = check_int(n_clusters, "n_clusters", low=1, high=n)
    n_init = check_int(n_init, "n_init", low=1)
    max_iter = check_int(max_iter, "max_iter", low=1)
    seed = check_int(seed, "seed", low=0)
    for name, v in (("tol", tol), ("inertia_tol", inertia_tol)):
        if isinstance(v, bool) or not (isinstance(v, (int, float, np.floating)) and v >= 0):
            raise ParameterError(f"{name}={v!r} must be a float >= 0", field=name)
    be = _resolve_backend(backend)
    device = _check_kmeans_device(device, be, backend)
    fixed = None
    if fixed_labels is not None:
        fixed = np.asarray(fixed_labels)
        if fixed.shape != (n,) or not np.issubdtype(fixed.dtype, np.integer):
            raise ParameterError(f"fixed_labels must be an int array of shape ({n},), got "
                                 f"{fixed.dtype} {fixed.shape}", field="fixed_labels")
        fixed = fixed.astype(np.int64)
        if fixed.min() < -1 or fixed.max() >= K:
            raise ParameterError(f"fixed_labels values must be -1 (free) or in [0, {K - 1}], "
                                 f"got range [{fixed.min()}, {fixed.max()}]",
                                 field="fixed_labels")
        if not (fixed >= 0).any():
            fixed = None
    if init is not None:
        init = np.ascontiguousarray(init, dtype=np.float32)
        if init.shape != (K, d) or not np.isfinite(init).all():
            raise ParameterError(f"init must be finite with shape ({K}, {d}), got {init.shape}",
                                 field="init")
        n_init = 1
    m = fit_size(n, K, fit_rows)
    if m < n:
        rows = fit_subsample(n, m, seed, None if fixed is None else np.flatnonzero(fixed >= 0))
        sub = kmeans(X[rows], K, seed=seed, n_init=n_init, max_iter=max_iter, tol=tol,
                     inertia_tol=inertia_tol, init=init,
                     fixed_labels=None if fixed is None else fixed[rows], init_size=init_size,
                     backend=backend, device=device, fit_rows=None)
        del rows
        run = _Run(sub.centers, fixed)
        _finish_all_rows(X, [run], be, device)
        return KMeansResult(centers=run.centers, labels=run.labels, inertia=run.inertia,
                            n_iter=sub.n_iter)
    xsq = _sqnorms(X)
    tol_abs = float(tol) * _mean_feature_variance(X, xsq, be)
    best = None
    for r in range(n_init):
        if init is not None:
            c0 = init.copy()
        elif fixed is not None:
            c0 = _seeded_init(X, K, fixed, seed * 1_000_003 + r, init_size, be)
        else:
            c0 = kmeans_plusplus(X, K, seed=seed * 1_000_003 + r, init_size=init_size,
                                 backend=be)
        res = _lloyd(X, c0, max_iter, tol_abs, float(inertia_tol), be, fixed, xsq, device)
        if best is None or res.inertia < best.inertia:
            best = res
    return best


def _check_kmeans_device(device, be, backend):
    """``device`` as a torch device for the products, or None for the CPU path."""
    if device is None:
        return None
    from .validate import check_device
    device = check_device(device, "device")
    if device.type == "cpu":
        return None
    if be != "torch":
        raise ParameterError(f"device={str(device)!r} needs backend 'torch' or 'auto', got "
                             f"{backend!r}", field="device")
    return device


def _seeded_init(X, K, fixed, seed, init_size, be):
    """Clusters with fixed members start at their mean; the rest by k-means++ around them."""
    d = X.shape[1]
    present = np.unique(fixed[fixed >= 0])
    means = np.empty((present.size, d), dtype=np.float32)
    for j, c in enumerate(present):
        means[j] = X[fixed == c].mean(axis=0, dtype=np.float64)
    free_ids = np.setdiff1d(np.arange(K), present)
    if free_ids.size == 0:
        centers = np.empty((K, d), dtype=np.float32)
        centers[present] = means
        return centers
    allc = kmeans_plusplus(X, K, seed=seed, init_size=init_size, centers0=means, backend=be)
    centers = np.empty((K, d), dtype=np.float32)
    centers[present] = allc[:present.size]
    centers[free_ids] = allc[present.size:]
    return centers


def constrained_kmeans_lockstep(X, specs, *, max_iter=50, tol=1e-4, inertia_tol=1e-4,
                                backend="auto", progress=None, fit_rows="auto", seed=0,
                                device=None):
    """Several constrained seeded K-means runs on the same ``X``, iterated in lockstep.

    The prior of :mod:`as3l_plugin.propagation.seeded_kmeans` runs constrained K-means at
    six K (10…60) on the same features. Run one after the other, every Lloyd iteration of
    every run streams the whole of ``X`` through a thin matrix product (K <= 60 columns),
    which is memory-bound. Here all unfinished runs share one pass per iteration: one
    product of each row chunk with the concatenated centres of all runs (``sum(K)`` columns,
    compute-bound), then a per-run argmin on its slice; cluster sums are updated
    incrementally (float64) from the samples that changed cluster only.

    It is :func:`kmeans` with ``init`` and ``fixed_labels`` applied to each run: the same
    assignment, tie rule, empty-cluster rule and stopping rules (:func:`_lloyd_runs`). The
    product shape and the incremental sums differ from sequential runs, so results can
    differ from them in the last float bits (and an exact distance tie may break
    differently); each path is deterministic on its own.

    Parameters
    ----------
    X : ndarray of float32, shape (n, d)
        A read-only ``numpy.memmap`` works (it is read in row chunks, never copied whole).
    specs : list of (init, fixed)
        ``init`` float32 (K, d): initial centres; ``fixed``: the samples held in a cluster in
        every assignment, as an int array (n,) with -1 for free samples, or as a pair
        ``(rows, clusters)`` of int arrays (m,) (the same, without an entry per row).
    max_iter : int
    tol, inertia_tol : float
        As :func:`kmeans` (``tol`` is relative to the mean feature variance).
    backend : {'auto', 'torch', 'numpy', 'faiss'}
        ``'numpy'``: numpy products; otherwise torch (faiss has no constrained assignment).
    progress : callable, optional
        Called with the number of unfinished runs after every iteration.
    fit_rows : 'auto', int or None
        As :func:`kmeans`, with K the largest K of ``specs``: beyond that many rows, the runs
        iterate on one seeded subsample (every fixed sample included), then every row is
        assigned once to each run's centres.
    seed : int
        Seeds the subsample only.
    device : str or torch.device, optional
        As :func:`kmeans`: torch device of the assignment products (torch backend); the
        incremental cluster sums stay on the CPU.

    Returns
    -------
    list of (labels int64 (n,), n_iter int), one per spec.
    """
    be = "numpy" if _resolve_backend(backend) == "numpy" else _resolve_backend("auto")
    device = _check_kmeans_device(device, be, backend)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    fixed = [_fixed_rows(f) for _, f in specs]
    inits = [np.array(init, dtype=np.float32) for init, _ in specs]
    m = fit_size(n, max(c.shape[0] for c in inits), fit_rows)
    if m >= n:
        runs = _lockstep_runs(X, inits, fixed, max_iter, tol, inertia_tol, be, progress,
                              device)
        return [(r.labels, r.n_iter) for r in runs]
    keep = [f[0] for f in fixed if f is not None]
    rows = fit_subsample(n, m, check_int(seed, "seed", low=0),
                         np.unique(np.concatenate(keep)) if keep else None)
    sub_fixed = [None if f is None else (np.searchsorted(rows, f[0]), f[1]) for f in fixed]
    sub = _lockstep_runs(X[rows], inits, sub_fixed, max_iter, tol, inertia_tol, be, progress,
                         device)
    del rows
    runs = _finish_all_rows(X, [_Run(r.centers, f) for r, f in zip(sub, fixed)], be, device)
    return [(r.labels, s.n_iter) for r, s in zip(runs, sub)]


def _lockstep_runs(X, inits, fixed, max_iter, tol, inertia_tol, be, progress, device=None):
    xsq = _sqnorms(X)
    tol_abs = float(tol) * _mean_feature_variance(X, xsq, "float64")
    runs = [_Run(init, f) for init, f in zip(inits, fixed)]
    return _lloyd_runs(X, xsq, runs, max_iter, tol_abs, float(inertia_tol), be, device=device,
                       incremental=True, progress=progress)
