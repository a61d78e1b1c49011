"""Does fitting K-means on a subsample (``fit_rows``) change the AS3L prior?

Run::

    OMP_NUM_THREADS=1 python -m as3l_plugin.benchmarks.fit_rows_quality --seeds 0-5

Fashion-MNIST train (60,000 images), features = the top-50 principal components of the pixels
(as :mod:`~as3l_plugin.benchmarks.offline_quality`). For each seed and budget (10 and 40 =
1 and 4 labels per class): ``as3l`` selection + ``seeded_kmeans`` prior with oracle labels,
once with every row in every Lloyd iteration (60,000 rows is below the ``fit_rows='auto'``
floor) and once with the floor lowered to ``--fit-rows`` (default 16,384), so that every
K-means of both steps is fitted on that many rows and every row assigned once afterwards.
Prints the prior accuracy on the unlabeled rows per seed, the means and the paired
differences.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np


def _seeds(text):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def pca_pixels(dim=50):
    from ..datasets import load_dataset

    ds = load_dataset("fashion_mnist")
    P = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32) / 255.0
    P -= P.mean(axis=0)
    w, V = np.linalg.eigh(P.T.astype(np.float64) @ P.astype(np.float64))
    top = V[:, np.argsort(w)[::-1][:dim]].astype(np.float32)
    return np.ascontiguousarray(P @ top), ds.y_train.astype(np.int64)


def prior_accuracy_at(X, y, budget, seed, fit_floor):
    """``as3l`` + ``seeded_kmeans`` prior accuracy (%) with ``clustering.FIT_ROWS_MIN`` set to
    ``fit_floor`` for the call (restored after)."""
    from .. import clustering
    from ..metrics import prior_accuracy
    from ..propagation import get_propagator
    from ..selection import get_sampler

    old = clustering.FIT_ROWS_MIN
    clustering.FIT_ROWS_MIN = int(fit_floor)
    try:
        idx = get_sampler("as3l").select(X, budget, seed=seed)
        prior = get_propagator("seeded_kmeans").propagate(X, idx, y[idx], int(y.max()) + 1,
                                                          seed=seed)
    finally:
        clustering.FIT_ROWS_MIN = old
    return 100.0 * prior_accuracy(prior, y, exclude=idx)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m as3l_plugin.benchmarks.fit_rows_quality",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=_seeds, default=_seeds("0-5"), help="e.g. 0-5 or 0,3")
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 40])
    ap.add_argument("--fit-rows", type=int, default=16_384)
    ap.add_argument("--n", type=int, default=0, help="use the first N rows only (tests)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    X, y = pca_pixels()
    if args.n:
        X, y = X[:args.n], y[:args.n]
    print(f"Fashion-MNIST PCA-50, {X.shape[0]:,} rows; prior accuracy (%) on unlabeled rows, "
          f"as3l + seeded_kmeans; 'all' = every row per iteration, 'sub' = fitted on "
          f"{args.fit_rows:,} rows")
    print("| budget | seed | all | sub | sub - all |")
    print("|---|---|---|---|---|")
    for B in args.budgets:
        full, sub = [], []
        for s in args.seeds:
            full.append(prior_accuracy_at(X, y, B, s, fit_floor=max(X.shape[0], 1 << 16)))
            sub.append(prior_accuracy_at(X, y, B, s, fit_floor=args.fit_rows))
            print(f"| {B} | {s} | {full[-1]:.2f} | {sub[-1]:.2f} | {sub[-1] - full[-1]:+.2f} |",
                  flush=True)
        d = np.array(sub) - np.array(full)
        print(f"| {B} | mean | {np.mean(full):.2f} | {np.mean(sub):.2f} | {d.mean():+.2f} "
              f"(s.e. {d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else 0:.2f}; sub ahead "
              f"on {(d > 0).sum()} of {d.size}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
