"""AS3L's single-shot selection by multiple clusterings (Sec. 3.2.2).

The paper: "perform C times K-means clustering on f_fine … find the samples that are assigned
to the same classes in the C times cluster. Then medians are selected to annotate." Its
Algorithm 1 (appendix) is not in our copy; this is our design of it, written down here.

Design
------
1. **Runs.** ``C = n_runs`` (6, as in the paper) K-means runs with ``K = budget +
   len(labeled_idx)`` clusters, each with its own seed drawn from
   ``numpy.random.SeedSequence(seed)`` (so sampler seeds 0 and 1 share no run).
2. **Consistent groups.** Samples that share their cluster in *all* C runs form a group:
   the groups are the cells of the intersection of the C partitions (samples grouped by
   their tuple of C labels). Large groups are dense, stable regions; samples on cluster
   borders end up in small groups.
3. **Order.** Groups are ranked by size (largest first), ties by their smallest member index.
4. **Coverage pass.** The reference partition is run 0. Walking the ranked groups, a group is
   taken when its run-0 cluster has no representative yet (and holds no labeled sample);
   groups smaller than ``min_group_size`` are skipped in this pass. Every run-0 cluster is
   the union of groups, so this yields exactly one representative per run-0 cluster that
   has a large enough group: the core of that cluster that all runs agree on. This keeps
   two representatives out of the same region (coverage) while the representative is
   placed on the stable core rather than the cluster's centre of mass.
5. **Fill passes** (only when step 4 gave fewer than ``budget``: warm start, tiny data,
   clusters made only of tiny groups): the remaining groups in rank order (any size, one
   representative each), then k-center greedy over the rest (farthest from everything
   chosen or labeled; ties to the smallest index).
6. **Representative** of a group (``representative``; default ``'medoid'`` for
   ``variant='faithful'``, ``'typical'`` for ``variant='density'``):

   - ``'medoid'`` (the paper's "median"): the member minimising the summed
     Euclidean distance to the group's members. Exact for groups of up to 1024 members;
     beyond that the candidates are the 256 members nearest the group mean and the sum runs
     over 1024 evenly spaced members (deterministic, no RNG);
   - ``'mean'``: the member nearest the group mean;
   - ``'typical'``: TypiClust's typicality inside the group (1 / mean distance to the
     ``k_nn`` nearest members), i.e. the density mode of the core.

   Only unlabeled members are eligible; ties go to the smallest index.

Variants
--------
``variant='faithful'`` (default) is the design above.

``variant='density'`` (our improvement, *density peaks among consistent groups*) keeps steps
1–3 and 6 but replaces the run-0 coverage pass: the candidates are the ``candidates * budget``
largest groups with at least ``min_group_size`` members; with ``rho`` = group size and
``delta`` = distance from a group's representative to the nearest representative of a larger
candidate (ties: earlier in rank; the largest group gets its farthest distance), the
``budget`` candidates with the largest ``rho ** density_power * delta`` are taken (Rodriguez
& Laio's density-peak rule, 2014). Large groups lying next to a larger one — two halves of
one class that some runs split — score low, so the picks spread over distinct dense regions
instead of following run 0's partition. Then the same fill passes. Its default
representative is ``'typical'`` (the density mode of the group).

Both variants are offered; ``faithful`` stays the default. How they compare with each other
and with the peers: the README, "Offline stage" → "Quality"
(``python -m as3l_plugin.benchmarks.offline_quality``).

Attributes
----------
After :meth:`~as3l_plugin.selection.base.BaseSampler.select`: ``run_labels_`` int32
``(C, n)``, ``group_ids_`` int64 ``(n,)`` (group of every sample), ``group_sizes_`` int64
``(G,)``, ``n_groups_``, ``chosen_groups_`` (group of every pick, ``-1`` for k-center fill),
``n_filled_`` (picks made by the fill passes).
"""

from __future__ import annotations

import numbers

import numpy as np

from ..clustering import kmeans, pairwise_sqdist
from ..validate import FIT_ROWS, Device, Interval, Options
from .base import BaseSampler
from ._utils import kcenter_fill, typicality

REPRESENTATIVES = ("medoid", "mean", "typical")
VARIANTS = ("faithful", "density")
_MEDOID_EXACT = 1024
_MEDOID_CANDIDATES = 256


def consistent_groups(run_labels):
    """Cells of the intersection of C partitions.

    Parameters
    ----------
    run_labels : ndarray of int, shape (C, n)

    Returns
    -------
    group_ids : ndarray of int64, shape (n,)
        Group of every sample; groups numbered in order of their smallest member.
    sizes : ndarray of int64, shape (G,)
    """
    key = np.asarray(run_labels[0], dtype=np.int64)
    for lab in run_labels[1:]:  # one run at a time: no int64 copy of all C runs
        lab = np.asarray(lab)
        _, key = np.unique(key * (int(lab.max()) + 1) + lab, return_inverse=True)
        key = key.astype(np.int64).ravel()
    # renumber by first occurrence so ids do not depend on label values
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    gid = rank[inv.ravel()]
    return gid, np.bincount(gid)


def medoid(X, members):
    """Member minimising the summed Euclidean distance to the others (see module doc)."""
    m = members.size
    if m <= 2:
        return int(members.min())
    Xm = X[members]
    if m <= _MEDOID_EXACT:
        cand = np.arange(m)
        ref = Xm
    else:
        mu = Xm.mean(axis=0, dtype=np.float64).astype(np.float32)[None]
        d = pairwise_sqdist(Xm, mu)[:, 0]
        cand = np.sort(np.argsort(d, kind="stable")[:_MEDOID_CANDIDATES])
        ref = Xm[np.linspace(0, m - 1, _MEDOID_EXACT).astype(np.int64)]
    cost = np.sqrt(pairwise_sqdist(Xm[cand], ref).astype(np.float64)).sum(axis=1)
    best = cand[cost == cost.min()]
    return int(members[best].min())


class AS3LSampler(BaseSampler):
    """Multi-clustering selection of AS3L (see the module docstring for the design).

    Parameters
    ----------
    n_runs : int, default=6
        C, the number of K-means runs.
    n_clusters : int, optional
        K of every run; default ``budget + len(labeled_idx)``.
    representative : {'medoid', 'mean', 'typical'}, optional
        Default ``'medoid'`` (faithful) or ``'typical'`` (density).
    variant : {'faithful', 'density'}, default='faithful'
    min_group_size : int, default=2
        Groups smaller than this are used only by the fill passes.
    candidates : int, default=5
        ``variant='density'``: candidates per budget slot.
    density_power : float, default=0.5
        ``variant='density'``: exponent of the group size in the score.
    k_nn : int, default=20
        Neighbours for ``representative='typical'``.
    max_iter, backend
        Passed to :func:`as3l_plugin.clustering.kmeans`.
    fit_rows : 'auto', int or None, default='auto'
        Rows each K-means run is fitted on before every row is assigned
        (:func:`as3l_plugin.clustering.kmeans`; ``'auto'``: all rows up to
        ``max(65536, 256 K)``, ``None``: always all rows).
    device : str, optional
        Torch device of the K-means products (``'cuda'``); default the CPU.
    """

    _parameter_constraints = {
        "n_runs": [Interval(int, 1, None)],
        "n_clusters": [None, Interval(int, 1, None)],
        "representative": [None, Options(REPRESENTATIVES)],
        "variant": [Options(VARIANTS)],
        "min_group_size": [Interval(int, 1, None)],
        "candidates": [Interval(int, 1, None)],
        "density_power": [Interval(numbers.Real, 0, 10)],
        "k_nn": [Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None)],
        "fit_rows": FIT_ROWS,
        "device": [None, Device()],
    }

    def __init__(self, *, n_runs=6, n_clusters=None, representative=None,
                 variant="faithful", min_group_size=2, candidates=5, density_power=0.5,
                 k_nn=20, max_iter=50, backend="auto", fit_rows="auto", device=None):
        self.n_runs = n_runs
        self.n_clusters = n_clusters
        self.representative = representative
        self.variant = variant
        self.min_group_size = min_group_size
        self.candidates = candidates
        self.density_power = density_power
        self.k_nn = k_nn
        self.max_iter = max_iter
        self.backend = backend
        self.fit_rows = fit_rows
        self.device = device

    # ----------------------------------------------------------------- pieces
    def _runs(self, X, K, seed):
        from tqdm.auto import tqdm

        seeds = np.random.SeedSequence(seed).generate_state(self.n_runs)
        out = np.empty((self.n_runs, X.shape[0]), dtype=np.int32)  # K < 2**31
        for c, s in enumerate(tqdm(seeds, desc=f"as3l k-means runs (K={K})", unit="run",
                                   disable=None, leave=False)):
            out[c] = kmeans(X, K, seed=int(s), max_iter=self.max_iter, backend=self.backend,
                            fit_rows=self.fit_rows, device=self.device).labels
        return out

    def _rep_kind(self):
        if self.representative is not None:
            return self.representative
        return "medoid" if self.variant == "faithful" else "typical"

    def _representative(self, X, members):
        if members.size == 1:
            return int(members[0])
        kind = self._rep_kind()
        if kind == "medoid":
            return medoid(X, members)
        if kind == "mean":
            Xm = X[members]
            mu = Xm.mean(axis=0, dtype=np.float64).astype(np.float32)[None]
            d = pairwise_sqdist(Xm, mu)[:, 0]
            return int(members[d == d.min()].min())
        t = typicality(X[members], min(self.k_nn, max(1, members.size // 2)))
        return int(members[t == t.max()].min())

    def _coverage_pass(self, X, budget, order, sizes, members_of, ref, covered):
        """Faithful: one group (the largest) per reference (run-0) cluster."""
        picks = []
        for g in order:
            if len(picks) == budget:
                break
            if sizes[g] < self.min_group_size:
                continue
            mem = members_of(g)
            if mem.size == 0 or covered[ref[mem[0]]]:
                continue
            picks.append((self._representative(X, mem), int(g)))
            covered[ref[mem[0]]] = True
        return picks

    def _density_pass(self, X, budget, order, sizes, members_of, labeled_idx):
        """Density peaks among the largest consistent groups."""
        cand, reps = [], []
        for g in order:
            if len(cand) == self.candidates * budget:
                break
            if sizes[g] < self.min_group_size:
                continue
            mem = members_of(g)
            if mem.size == 0:
                continue
            cand.append(int(g))
            reps.append(self._representative(X, mem))
        if not cand:
            return []
        reps = np.asarray(reps, dtype=np.int64)
        D = np.sqrt(pairwise_sqdist(X[reps], X[reps]).astype(np.float64))
        delta = np.empty(len(cand))
        delta[0] = D[0].max()
        for i in range(1, len(cand)):  # candidates are in rank order (largest first)
            delta[i] = D[i, :i].min()
        if labeled_idx.size:  # a region already labeled is not a peak to annotate again
            dl = np.sqrt(pairwise_sqdist(X[reps], X[labeled_idx]).astype(np.float64))
            delta = np.minimum(delta, dl.min(axis=1))
        rho = sizes[cand].astype(np.float64)
        score = rho ** float(self.density_power) * delta
        pick = np.lexsort((np.arange(len(cand)), -score))[:budget]
        self.density_score_ = score
        return [(int(reps[i]), cand[i]) for i in pick]

    # ----------------------------------------------------------------- the verb
    def _select(self, X, budget, seed, labeled_idx):
        n = X.shape[0]
        K = min(n, self.n_clusters if self.n_clusters is not None
                else budget + labeled_idx.size)
        runs = self._runs(X, K, seed)
        gid, sizes = consistent_groups(runs)
        self.run_labels_, self.group_ids_, self.group_sizes_ = runs, gid, sizes
        self.n_groups_ = int(sizes.size)
        ids = np.arange(sizes.size)  # numbered by first member: tie-break = smallest index
        order = ids[np.lexsort((ids, -sizes))]

        by_group = np.argsort(gid, kind="stable")   # members of a group are contiguous
        starts = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=starts[1:])
        is_lab = np.zeros(n, dtype=bool)
        is_lab[labeled_idx] = True

        def members_of(g):
            m = by_group[starts[g]:starts[g + 1]]
            return m[~is_lab[m]]

        if self.variant == "faithful":
            covered = np.zeros(K, dtype=bool)
            covered[runs[0][labeled_idx]] = True
            picks = self._coverage_pass(X, budget, order, sizes, members_of, runs[0], covered)
        else:
            picks = self._density_pass(X, budget, order, sizes, members_of, labeled_idx)
        chosen = [p for p, _ in picks]
        chosen_groups = [g for _, g in picks]
        n_main = len(chosen)
        used = np.zeros(sizes.size, dtype=bool)
        used[chosen_groups] = True
        for g in order:                      # fill 1: remaining groups in rank order
            if len(chosen) == budget:
                break
            if used[g]:
                continue
            mem = members_of(g)
            if mem.size == 0:
                continue
            chosen.append(self._representative(X, mem))
            chosen_groups.append(int(g))
            used[g] = True
        if len(chosen) < budget:             # fill 2: k-center greedy
            more = kcenter_fill(X, chosen, labeled_idx, budget - len(chosen))
            chosen += more
            chosen_groups += [-1] * len(more)
        self.chosen_groups_ = np.asarray(chosen_groups, dtype=np.int64)
        self.n_filled_ = len(chosen) - n_main
        return np.asarray(chosen, dtype=np.int64)
