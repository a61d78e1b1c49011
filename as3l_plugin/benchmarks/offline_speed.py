"""Speed and memory of the offline stage: ``as3l`` selection + ``seeded_kmeans`` prior.

Run::

    python -m as3l_plugin.benchmarks.offline_speed                 # GMM + Fashion-MNIST
    python -m as3l_plugin.benchmarks.offline_speed --data gmm --budgets 10 100

For every data set and budget B the work is: select B samples with the ``as3l`` sampler
(6 K-means runs at K = B, consistent groups, one medoid each) and propagate their true labels
with ``seeded_kmeans`` at the default K list (10, 20, …, 60). The same steps are also run by a
straightforward scikit-learn implementation written here (the peer), and by ``faiss``
(``faiss.Kmeans`` with its defaults for the selection's runs, ``faiss.knn`` as the prior's
assignment step on 256 points per centroid, then every row assigned; the rest as below):

- selection: 6 × ``sklearn.cluster.KMeans(n_clusters=B, n_init=1, max_iter=50,
  random_state=r)`` (greedy k-means++, Lloyd, ``tol=1e-4``; ``max_iter`` as ours, not
  scikit-learn's 300, so that both sides do the same work), samples grouped by their 6
  labels, ranked by size, one group per run-0 cluster, the medoid of each;
- prior: per K, the same seed groups as ours (:func:`~as3l_plugin.propagation.seeded_kmeans.
  seed_groups`), seed means + ``sklearn.cluster.kmeans_plusplus`` centres for the free clusters,
  then a constrained Lloyd loop — ``sklearn.metrics.pairwise_distances_argmin`` to assign,
  seeds put back into their cluster, centres recomputed — with ours' stopping rule (50
  iterations at most; stop when labels are unchanged, the inertia improves by ≤ 1e-4 of
  itself, or the centre shift is ≤ 1e-4 × mean feature variance).

Each side runs in its own fresh subprocess (all cores). The clock starts after the imports
(numpy, torch / scikit-learn), a warm-up of the same steps on 2,000 rows (so lazily loaded
library code — BLAS kernels, thread pools — is resident) and loading the features, so only
the algorithms are timed: wall-clock seconds and CPU seconds (user + system, all threads).
On a shared machine the CPU time is the steadier figure; the wall time is what a user waits.
Peak memory is the growth of the process's peak RSS (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) over the RSS after the warm-up, *including* the feature matrix
itself (loaded after the reset); the target is
``3 × (features + prior)`` bytes.

Data:

- ``gmm``: 50,000 × 512 float32, 10 classes, centres ~ N(0, 0.35²) per coordinate
  (≈ 8 units apart) plus N(0, 1) noise: clusters overlap enough for K-means to need real
  iterations.
- ``fashion_mnist``: the 60,000 training images, pixels / 255, centred and projected on their
  top-512 principal components (covariance eigenvectors, float64) → float32 (60,000 × 512).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KS = (10, 20, 30, 40, 50, 60)
N_RUNS = 6


# --------------------------------------------------------------------------- data
def make_gmm(n=50_000, dim=512, n_classes=10, seed=0, spread=0.35):
    """Gaussian mixture features float32 (n, dim) and labels int64 (n,)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_classes, dim)).astype(np.float32)
    y = rng.integers(n_classes, size=n).astype(np.int64)
    X = rng.standard_normal(size=(n, dim), dtype=np.float32)
    X += centers[y]
    return X, y


def make_fashion_pca(dim=512):
    """Fashion-MNIST train pixels projected on their top-``dim`` principal components."""
    from ..datasets import load_dataset

    ds = load_dataset("fashion_mnist")
    P = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32) / 255.0
    P -= P.mean(axis=0)
    cov = (P.T.astype(np.float64) @ P.astype(np.float64)) / len(P)
    w, V = np.linalg.eigh(cov)
    top = V[:, np.argsort(w)[::-1][:dim]].astype(np.float32)
    return np.ascontiguousarray(P @ top), ds.y_train.astype(np.int64)


# --------------------------------------------------------------------------- memory probes
def _status(field):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu():
    """CPU seconds (user + system, all threads) used by this process so far."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- ours
def ours_select(X, budget, seed=0):
    from ..selection import get_sampler
    return get_sampler("as3l").select(X, budget, seed=seed)


def ours_prior(X, idx, labels, num_classes, seed=0):
    from ..propagation import get_propagator
    return get_propagator("seeded_kmeans", ks=KS).propagate(X, idx, labels, num_classes,
                                                            seed=seed)


# --------------------------------------------------------------------------- the scikit-learn peer
def _pp_on_subsample(X, k, init_rows, seed):
    """scikit-learn's k-means++ on ``max(init_rows, 64 k)`` random rows (ours' seeding size)."""
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    m = min(X.shape[0], max(int(init_rows), 64 * k))
    sub = X[np.sort(rng.choice(X.shape[0], m, replace=False))]
    return kmeans_plusplus(sub, k, random_state=seed)[0]


def sklearn_select(X, budget, seed=0, n_runs=N_RUNS, init_rows=None):
    """Multi-K-means consistent-group selection, straightforwardly with scikit-learn.

    The same steps as the ``as3l`` sampler: ``n_runs`` K-means runs at K = budget, groups of
    samples sharing all their labels, ranked by size; one group per run-0 cluster (groups of
    >= 2), then the other groups; the medoid of each chosen group (exact up to 1024
    members, else among the 256 members nearest the mean against 1024 spread members).
    """
    from sklearn.cluster import KMeans

    n = X.shape[0]
    L = np.empty((n, n_runs), dtype=np.int64)
    for r in range(n_runs):
        init = "k-means++" if init_rows is None else _pp_on_subsample(
            X, budget, init_rows, seed * n_runs + r)
        km = KMeans(n_clusters=budget, init=init, n_init=1, max_iter=50,
                    random_state=seed * n_runs + r)
        L[:, r] = km.fit(X).labels_
    return _groups_and_medoids(X, L, budget)


def faiss_select(X, budget, seed=0, n_runs=N_RUNS):
    """The same selection with ``faiss.Kmeans`` as a faiss user runs it (its defaults:
    random initial centres, centres fitted on at most 256 points per centroid; 50 iterations
    like ours), every row then assigned by the trained index."""
    import faiss

    n, d = X.shape
    L = np.empty((n, n_runs), dtype=np.int64)
    for r in range(n_runs):
        km = faiss.Kmeans(d, budget, niter=50, seed=seed * n_runs + r + 1, verbose=False)
        km.train(X)
        L[:, r] = km.index.search(X, 1)[1][:, 0]
    return _groups_and_medoids(X, L, budget)


def _groups_and_medoids(X, L, budget):
    """Consistent groups of the (n, runs) labels ``L``, the coverage pass and the medoids
    (the peers' shared second half of the selection)."""
    from sklearn.metrics import pairwise_distances

    _, inv, counts = np.unique(L, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    order = np.lexsort((np.arange(counts.size), -counts))
    by_group = np.argsort(inv, kind="stable")  # each group's members, ascending
    starts = np.concatenate([[0], np.cumsum(counts)])

    def members_of(g):
        return by_group[starts[g]:starts[g + 1]]

    def medoid(members):
        Xm = X[members]
        if members.size > 1024:
            d = ((Xm - Xm.mean(axis=0)) ** 2).sum(axis=1)
            cand = Xm[np.argsort(d)[:256]]
            ref = Xm[np.linspace(0, members.size - 1, 1024).astype(int)]
            return members[np.argsort(d)[:256][pairwise_distances(cand, ref).sum(1).argmin()]]
        return members[pairwise_distances(Xm).sum(axis=1).argmin()]

    picks, covered, used = [], set(), set()
    for g in order:  # coverage pass: one group per run-0 cluster
        if len(picks) == budget:
            break
        if counts[g] < 2:
            continue
        members = members_of(g)
        if L[members[0], 0] in covered:
            continue
        covered.add(L[members[0], 0])
        used.add(g)
        picks.append(medoid(members))
    for g in order:  # fill: the other groups
        if len(picks) == budget:
            break
        if g not in used:
            picks.append(medoid(members_of(g)))
    return np.asarray(picks, dtype=np.int64)


def _faiss_argmin_min(X, centers):
    import faiss
    D, I = faiss.knn(np.ascontiguousarray(X), np.ascontiguousarray(centers, dtype=np.float32), 1)
    return I[:, 0].astype(np.int64), np.sqrt(np.maximum(D[:, 0], 0.0))


def faiss_prior(X, idx, labels, num_classes, seed=0, ks=KS, max_iter=50, tol=1e-4):
    """The same prior with ``faiss.knn`` as the assignment step: centres fitted on at most
    256 points per centroid (faiss' rule; the labeled rows always in), every row assigned
    to the final centres."""
    n = X.shape[0]
    m = min(n, 256 * max(ks))
    rows = np.union1d(np.random.default_rng(seed).choice(n, m, replace=False), idx)
    Xs = X[rows]
    pos = np.searchsorted(rows, idx)
    sub = sklearn_prior(Xs, pos, labels, num_classes, seed, ks, max_iter, tol,
                        init_rows=4096, argmin_min=_faiss_argmin_min, centers_out=[])
    votes = np.zeros((n, num_classes))
    for K, centers, groups in sub:
        lab = _faiss_argmin_min(X, centers)[0]
        lab[idx] = groups
        _add_votes(votes, lab, idx, labels, K)
    return _votes_to_prior(votes, idx, labels)


def _add_votes(votes, lab, idx, labels, K):
    """Add one run's normalised cluster label histograms to every row's ``votes``."""
    hist = np.zeros((K, votes.shape[1]))
    np.add.at(hist, (lab[idx], labels), 1.0)
    tot = hist.sum(axis=1, keepdims=True)
    votes += np.divide(hist, tot, out=np.zeros_like(hist), where=tot > 0)[lab]


def _votes_to_prior(votes, idx, labels):
    """Rows normalised (uniform without votes), labeled rows one-hot, float32."""
    C = votes.shape[1]
    tot = votes.sum(axis=1, keepdims=True)
    prior = np.where(tot > 0, votes / np.where(tot > 0, tot, 1), 1.0 / C)
    prior[idx] = np.eye(C)[labels]
    return prior.astype(np.float32)


def sklearn_prior(X, idx, labels, num_classes, seed=0, ks=KS, max_iter=50, tol=1e-4,
                  init_rows=None, argmin_min=None, centers_out=None):
    """Constrained seeded K-means at several K, straightforwardly with scikit-learn.

    ``argmin_min`` replaces scikit-learn's ``pairwise_distances_argmin_min`` as the
    assignment step; with ``centers_out`` (a list) the final ``(K, centres, seed groups)`` of
    every K are appended to it and returned instead of the prior (the faiss peer's fit).
    """
    from sklearn.cluster import kmeans_plusplus
    from sklearn.metrics import pairwise_distances_argmin_min

    from ..propagation.seeded_kmeans import seed_groups

    argmin_min = argmin_min or pairwise_distances_argmin_min
    n = X.shape[0]
    tol_abs = tol * float(X.var(axis=0).mean())
    votes = np.zeros((n, num_classes))
    for j, K in enumerate(ks):
        groups = seed_groups(X[idx], labels, K)
        G = int(groups.max()) + 1
        centers = np.stack([X[idx[groups == g]].mean(axis=0) for g in range(G)])
        if K > G:
            if init_rows is None:
                extra, _ = kmeans_plusplus(X, K - G, random_state=seed * 1000 + j)
            else:
                extra = _pp_on_subsample(X, K - G, init_rows, seed * 1000 + j)
            centers = np.vstack([centers, extra]).astype(np.float32)
        prev, prev_inertia, final = None, np.inf, False
        for _ in range(max_iter):
            lab, dist = argmin_min(X, centers)
            lab[idx] = groups
            dist[idx] = np.linalg.norm(X[idx] - centers[groups], axis=1)
            inertia = float((dist.astype(np.float64) ** 2).sum())
            if prev is not None and (np.array_equal(prev, lab)
                                     or prev_inertia - inertia <= 1e-4 * inertia):
                final = True
                break
            new = centers.copy()
            for k in range(K):
                members = lab == k
                if members.any():
                    new[k] = X[members].mean(axis=0)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            prev, prev_inertia = lab, inertia
            if shift <= tol_abs:
                break
        if centers_out is not None:
            centers_out.append((K, centers, groups))
            continue
        if not final:
            lab = argmin_min(X, centers)[0]
            lab[idx] = groups
        _add_votes(votes, lab, idx, labels, K)
    if centers_out is not None:
        return centers_out
    return _votes_to_prior(votes, idx, labels)


SIDES = {"ours": (ours_select, ours_prior), "faiss": (faiss_select, faiss_prior),
         "sklearn": (sklearn_select, sklearn_prior)}


def run_side(side, X, y, budgets, seed=0, peer_init="full"):
    """Run one side in this process; returns per-budget timings and prior quality."""
    from ..metrics import class_coverage, prior_accuracy

    select, prior_fn = SIDES[side]
    if side == "sklearn" and peer_init == "subsample":
        rows = 4096
        select = lambda X, B, seed: sklearn_select(X, B, seed, init_rows=rows)  # noqa: E731
        prior_fn = lambda X, i, l, C, seed: sklearn_prior(X, i, l, C, seed,  # noqa: E731
                                                          init_rows=rows)
    C = int(y.max()) + 1
    out = []
    for B in budgets:
        t0, c0 = time.perf_counter(), _cpu()
        idx = np.asarray(select(X, B, seed=seed), dtype=np.int64)
        t1, c1 = time.perf_counter(), _cpu()
        prior = prior_fn(X, idx, y[idx], C, seed=seed)
        t2, c2 = time.perf_counter(), _cpu()
        out.append({"budget": int(B), "select_s": t1 - t0, "prior_s": t2 - t1,
                    "select_cpu_s": c1 - c0, "prior_cpu_s": c2 - c1,
                    "prior_accuracy": prior_accuracy(prior, y, exclude=idx),
                    "class_coverage": class_coverage(y[idx], C)})
    return out


def _worker(args):
    """Subprocess entry: imports, memory baseline, load, run, print one JSON line."""
    import warnings
    warnings.simplefilter("ignore")
    if args.worker == "ours":
        try:
            import torch  # noqa: F401  (the clustering backend; imported before the clock)
        except ImportError:
            pass
        from .. import clustering, propagation, selection  # noqa: F401
    else:
        if args.worker == "faiss":
            import faiss  # noqa: F401
        import sklearn.cluster  # noqa: F401
        import sklearn.metrics  # noqa: F401
    from .. import metrics  # noqa: F401
    Xw = np.load(args.features, mmap_mode="r")[:2000].astype(np.float32)
    yw = np.load(args.labels)[:2000]
    run_side(args.worker, Xw, yw, [min(args.budgets)], seed=args.seed, peer_init=args.peer_init)
    del Xw, yw
    reset = _reset_peak()
    base = _status("VmRSS")
    X = np.load(args.features)
    y = np.load(args.labels)
    t0, c0 = time.perf_counter(), _cpu()
    res = run_side(args.worker, X, y, args.budgets, seed=args.seed, peer_init=args.peer_init)
    total, total_cpu = time.perf_counter() - t0, _cpu() - c0
    peak = _status("VmHWM") if reset else None
    print(json.dumps({"side": args.worker, "runs": res, "total_s": total,
                      "total_cpu_s": total_cpu, "threads": _threads(args.worker),
                      "peak_extra_bytes": None if peak is None or base is None else peak - base,
                      "features_bytes": int(X.nbytes),
                      "prior_bytes": int(X.shape[0] * (int(y.max()) + 1) * 4)}))


def _have_faiss():
    try:
        import faiss  # noqa: F401
        return True
    except ImportError:
        return False


def _threads(side):
    if side == "ours":
        try:
            import torch
            return torch.get_num_threads()
        except ImportError:  # pragma: no cover
            return None
    from threadpoolctl import threadpool_info
    return max((i.get("num_threads", 0) for i in threadpool_info()), default=None)


def _spawn(side, fpath, ypath, budgets, seed, peer_init):
    cmd = [sys.executable, "-m", "as3l_plugin.benchmarks.offline_speed", "--worker", side,
           "--features", str(fpath), "--labels", str(ypath), "--seed", str(seed),
           "--peer-init", peer_init, "--budgets", *map(str, budgets)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(b):
    return "n/a" if b is None else f"{b / 2**20:.0f} MB"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m as3l_plugin.benchmarks.offline_speed",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=("gmm", "fashion_mnist", "both"), default="both")
    ap.add_argument("--n", type=int, default=50_000, help="GMM samples")
    ap.add_argument("--dim", type=int, default=512, help="feature dimension")
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sides", nargs="+", choices=tuple(SIDES),
                    default=[s for s in SIDES if s != "faiss" or _have_faiss()],
                    help="default: all (faiss where it is installed)")
    ap.add_argument("--peer-init", choices=("full", "subsample"), default="full",
                    help="k-means++ of the scikit-learn peer: on all rows (its default) or on "
                         "max(4096, 64 K) random rows like ours")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--worker", choices=tuple(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--features", help=argparse.SUPPRESS)
    ap.add_argument("--labels", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)

    datasets = ["gmm", "fashion_mnist"] if args.data == "both" else [args.data]
    results = {"budgets": args.budgets, "peer_init": args.peer_init, "cpus": os.cpu_count(),
               "load_before": os.getloadavg()[0], "data": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in datasets:
            X, y = make_gmm(args.n, args.dim) if name == "gmm" else make_fashion_pca(args.dim)
            fpath, ypath = Path(tmp) / f"{name}_X.npy", Path(tmp) / f"{name}_y.npy"
            np.save(fpath, X)
            np.save(ypath, y)
            print(f"\n== {name}: {X.shape[0]} x {X.shape[1]} float32, {int(y.max()) + 1} "
                  f"classes; budgets {args.budgets}; each side in a fresh process", flush=True)
            del X
            sides = {}
            for side in args.sides:
                r = _spawn(side, fpath, ypath, args.budgets, args.seed, args.peer_init)
                sides[side] = r
                limit = 3 * (r["features_bytes"] + r["prior_bytes"])
                print(f"{side:>8}: total {r['total_s']:6.1f} s wall, {r['total_cpu_s']:6.1f} s "
                      f"CPU ({r['threads']} threads)   peak extra memory "
                      f"{_mb(r['peak_extra_bytes'])} (limit 3x(features+prior) = "
                      f"{_mb(limit)})", flush=True)
                for run in r["runs"]:
                    print(f"          B={run['budget']:<4d} select {run['select_s']:6.2f} s "
                          f"({run['select_cpu_s']:.1f} CPU)   prior {run['prior_s']:6.2f} s "
                          f"({run['prior_cpu_s']:.1f} CPU)   prior acc "
                          f"{100 * run['prior_accuracy']:5.1f}%   coverage "
                          f"{run['class_coverage']}", flush=True)
            for peer in ("faiss", "sklearn"):
                if "ours" not in sides or peer not in sides:
                    continue
                ratio = sides[peer]["total_s"] / sides["ours"]["total_s"]
                ratio_cpu = sides[peer]["total_cpu_s"] / sides["ours"]["total_cpu_s"]
                print(f"   ratio {peer} / ours: {ratio:.2f}x wall, {ratio_cpu:.2f}x CPU "
                      "(> 1: ours is faster)", flush=True)
                sides[f"ratio_{peer}"], sides[f"ratio_{peer}_cpu"] = ratio, ratio_cpu
                if peer == "sklearn":  # the key earlier JSON files used
                    sides["ratio"], sides["ratio_cpu"] = ratio, ratio_cpu
            results["data"][name] = sides
    results["load_after"] = os.getloadavg()[0]
    print(f"\nload average before/after: {results['load_before']:.2f} / "
          f"{results['load_after']:.2f} on {results['cpus']} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
