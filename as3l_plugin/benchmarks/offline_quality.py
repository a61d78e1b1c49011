"""Quality of the offline stage: every sampler × every propagator on real data.

Run::

    python -m as3l_plugin.benchmarks.offline_quality --out results/offline_quality
    python -m as3l_plugin.benchmarks.offline_quality --datasets digits --seeds 2   # quick

For each data set, labels-per-class ``p`` in ``--per-class`` (1 and 4: budget ``p × C``), seed
in ``range(--seeds)`` and sampler, the sampler selects ``budget`` samples from the training
pool; their true labels (the oracle) are propagated by every propagator and we record

- **prior accuracy** on the unlabeled rows (:func:`as3l_plugin.metrics.prior_accuracy`),
- **class coverage** of the selection (:func:`as3l_plugin.metrics.class_coverage`),
- selection and propagation **time** (wall clock, this process).

Data and features (fixed, no learning; the same for every sampler)
-------------------------------------------------------------------
- ``digits``: the plugin's digits training split (1,437 8×8 images, 10 classes);
- ``fashion_mnist``: Fashion-MNIST training images; by default a fixed random subsample of
  ``--fmnist-n`` = 10,000 images (``numpy.random.default_rng(0)``), ``--fmnist-n 0`` for all
  60,000 (why the subsample: README, "Quality").

Learned features instead: ``--features DATASET=FILE`` (float32 ``.npy`` of the whole training
split, dataset order; ``{seed}`` in FILE is replaced by each seed), e.g. the f_fine of every
seed of an ``as3l bench`` run:
``--features fashion_mnist=results/bench_fashion_mnist_reduced/shared/seed{seed}/b10/finetune/f_fine.npy``.

Features: pixels scaled to [0, 1], centred, projected on the top 50 principal components
(float64 eigen-decomposition of the covariance), not whitened (why this recipe: README,
"Quality").

Peers (configured as their papers, documented in their modules)
---------------------------------------------------------------
``random``; ``coreset`` (k-center greedy from the sample nearest the mean);
``kmedoids`` (K-means K = budget, nearest sample to each centre); ``typiclust`` (K =
budget, 20-NN typicality, clusters of ≤ 5 skipped); ``probcover`` (δ from 95% ball purity of
K-means pseudo-labels with K = the true number of classes, as the ProbCover authors do);
``as3l`` (paper-faithful, the default), ``as3l[density]`` (``variant='density'``) and
``as3l[typical]`` (the faithful groups, each represented by its density mode:
``representative='typical'`` instead of the medoid).
Propagators with their defaults: ``seeded_kmeans`` (K = 10…60), ``label_spreading``
(LLGC, 10-NN graph, α = 0.99, tol 1e-9), ``knn`` (3-NN, distance-weighted).

Targets (issue 3): mean over seeds on both data sets, ``as3l`` + seeded_kmeans beats
random + label_spreading, kmedoids + seeded_kmeans and typiclust + seeded_kmeans, with class
coverage ≥ every peer's. The report ends with the margins.

Outputs (``--out DIR``, written atomically): ``offline_quality.md`` (tables + margins) and
``offline_quality.csv`` (one row per dataset, budget, sampler, propagator, seed).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from pathlib import Path

import numpy as np

DATASETS = ("digits", "fashion_mnist")
SAMPLERS = {  # row name -> (registry name, params)
    "random": ("random", {}),
    "coreset": ("coreset", {}),
    "probcover": ("probcover", {"n_clusters": "num_classes"}),
    "kmedoids": ("kmedoids", {}),
    "typiclust": ("typiclust", {}),
    "as3l": ("as3l", {}),
    "as3l[density]": ("as3l", {"variant": "density"}),
    "as3l[typical]": ("as3l", {"representative": "typical"}),
}
PROPAGATORS = ("seeded_kmeans", "label_spreading", "knn")
PEERS = (("random", "label_spreading"), ("kmedoids", "seeded_kmeans"),
         ("typiclust", "seeded_kmeans"))


# --------------------------------------------------------------------------- data
def pca_features(images, dim=50):
    """Pixels/255, centred, on the top-``dim`` principal components → float32 (n, dim)."""
    from ..features.choose import pixel_features
    return pixel_features(images, dim)


def load_features(name, fmnist_n=10_000):
    """Features float32 (n, 50), labels int64 (n,), number of classes."""
    from ..datasets import load_dataset

    ds = load_dataset(name)
    x, y = ds.x_train, np.asarray(ds.y_train, dtype=np.int64)
    if name == "fashion_mnist" and fmnist_n and fmnist_n < len(x):
        keep = np.sort(np.random.default_rng(0).choice(len(x), fmnist_n, replace=False))
        x, y = x[keep], y[keep]
    return pca_features(x), y, int(ds.num_classes)


# --------------------------------------------------------------------------- run
@functools.lru_cache(maxsize=8)  # every (dataset, seed) is used by each sampler
def learned_features(name, pattern, seed):
    """``pattern.format(seed=seed)`` (validated, one row per training sample), labels, classes."""
    from ..datasets import load_dataset
    from ..errors import InputError
    from ..io import load_features as load_npy_features

    ds = load_dataset(name)
    path = pattern.format(seed=seed)
    X = load_npy_features(path)
    if len(X) != len(ds.y_train):
        raise InputError(f"has {len(X)} rows, the {name} training split {len(ds.y_train)}",
                         path=path, field="--features")
    return X, np.asarray(ds.y_train, dtype=np.int64), int(ds.num_classes)


def run_grid(datasets, per_class, seeds, samplers, propagators, fmnist_n=10_000,
             features=None):
    """Run the grid; returns a list of dict rows (one per propagation).

    ``features``: ``{dataset: file pattern}`` for :func:`learned_features` (else PCA-50).
    """
    from tqdm.auto import tqdm

    from ..metrics import class_coverage, prior_accuracy
    from ..propagation import get_propagator
    from ..selection import get_sampler

    features = dict(features or {})
    rows = []
    data = {}
    for name in datasets:
        if name in features:  # fail on a missing file before any work
            for seed in range(seeds):
                learned_features(name, features[name], seed)
        else:
            data[name] = load_features(name, fmnist_n)
    # warm-up (imports, BLAS/OpenMP start-up) so the first timed cell is not penalised
    Xw = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    get_sampler("as3l").select(Xw, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for prop in propagators:
            get_propagator(prop).propagate(Xw, [0, 1], [0, 1], 2)
    cells = [(d, p, s, seed) for d in datasets for p in per_class for s in samplers
             for seed in range(seeds)]
    bar = tqdm(cells, desc="offline quality", unit="cell", file=sys.stderr)
    for d, p, sname, seed in bar:
        X, y, C = (learned_features(d, features[d], seed) if d in features else data[d])
        budget = p * C
        bar.set_postfix_str(f"{d} {p}/class {sname} seed {seed}")
        reg, params = SAMPLERS[sname]
        params = {k: (C if v == "num_classes" else v) for k, v in params.items()}
        t0 = time.perf_counter()
        idx = get_sampler(reg, **params).select(X, budget, seed=seed)
        t_sel = time.perf_counter() - t0
        cov = class_coverage(y[idx], C)
        for prop in propagators:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prior = get_propagator(prop).propagate(X, idx, y[idx], C, seed=seed)
            t_prop = time.perf_counter() - t0
            rows.append({"dataset": d, "n": len(X), "per_class": p, "budget": budget,
                         "sampler": sname, "propagator": prop, "seed": seed,
                         "accuracy": float(prior_accuracy(prior, y, exclude=idx)),
                         "coverage": int(cov), "select_s": round(t_sel, 4),
                         "propagate_s": round(t_prop, 4)})
    return rows


# --------------------------------------------------------------------------- report
def _agg(rows, **match):
    sel = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return sel


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows])) if rows else float("nan")


def summarize(rows, command=""):
    """Markdown tables (one per data set) and the target margins."""
    out = ["# Offline quality: samplers × propagators", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    per = sorted({r["per_class"] for r in rows})
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    props = list(dict.fromkeys(r["propagator"] for r in rows))
    n_seeds = len({r["seed"] for r in rows})
    out += [f"Mean ± std over {n_seeds} seeds. acc = prior accuracy on unlabeled rows (%), "
            "cov = classes present in the selection, time = selection + propagation "
            "(s, mean per seed).", ""]
    for d in datasets:
        n = _agg(rows, dataset=d)[0]["n"]
        out += [f"## {d} (n = {n})", ""]
        head = "| sampler | propagator | " + " | ".join(
            f"acc {p}/cl | cov {p}/cl | time {p}/cl" for p in per) + " |"
        out += [head, "|" + "---|" * (2 + 3 * len(per))]
        for s in samplers:
            for pr in props:
                cells = []
                for p in per:
                    r = _agg(rows, dataset=d, per_class=p, sampler=s, propagator=pr)
                    acc = np.array([x["accuracy"] for x in r]) * 100
                    cov = _mean(r, "coverage")
                    t = _mean(r, "select_s") + _mean(r, "propagate_s")
                    cells += [f"{acc.mean():.1f} ± {acc.std():.1f}", f"{cov:.1f}", f"{t:.2f}"]
                out.append(f"| {s} | {pr} | " + " | ".join(cells) + " |")
        out.append("")
    out += ["## Targets", "",
            "as3l + seeded_kmeans vs each peer (accuracy difference in points, positive = "
            "as3l better) and class coverage (as3l − best peer coverage, ≥ 0 required).", ""]
    for variant in [s for s in samplers if s.startswith("as3l")]:
        out += [f"### {variant}", "", "| dataset | labels/class | " + " | ".join(
            f"vs {s}+{p}" for s, p in PEERS) + " | coverage margin | all met |",
            "|" + "---|" * (4 + len(PEERS))]
        for d in datasets:
            for p in per:
                ours = _agg(rows, dataset=d, per_class=p, sampler=variant,
                            propagator="seeded_kmeans")
                a = _mean(ours, "accuracy")
                diffs = []
                for s, pr in PEERS:
                    diffs.append(100 * (a - _mean(_agg(rows, dataset=d, per_class=p, sampler=s,
                                                       propagator=pr), "accuracy")))
                peers_cov = [c for c in (_mean(_agg(rows, dataset=d, per_class=p, sampler=s,
                                                    propagator="seeded_kmeans"), "coverage")
                                         for s in samplers if not s.startswith("as3l"))
                             if np.isfinite(c)]
                # no peer sampler in the run (only as3l rows): no margin
                cm = _mean(ours, "coverage") - max(peers_cov) if peers_cov else float("nan")
                # "no" as soon as a comparison made fails; "yes" only where every comparison
                # was made and passes; otherwise (a peer missing, none failing) undecided "–"
                failed = any(np.isfinite(x) and x <= 0 for x in diffs) or (
                    np.isfinite(cm) and cm < 0)
                complete = all(np.isfinite(x) for x in diffs + [cm])
                met = "no" if failed else "yes" if complete else "–"
                out.append(f"| {d} | {p} | " + " | ".join(
                    f"{x:+.1f}" if np.isfinite(x) else "–" for x in diffs + [cm])
                           + f" | {met} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m as3l_plugin.benchmarks.offline_quality",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--per-class", nargs="+", type=int, default=[1, 4],
                    help="labels per class (budget = this × number of classes)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--propagators", nargs="+", default=list(PROPAGATORS),
                    choices=PROPAGATORS)
    ap.add_argument("--fmnist-n", type=int, default=10_000,
                    help="Fashion-MNIST subsample size (0 = all 60,000)")
    ap.add_argument("--features", action="append", default=[], metavar="DATASET=FILE",
                    help="learned features instead of PCA-50: a float32 .npy of the whole "
                         "training split; '{seed}' in FILE is replaced by each seed "
                         "(repeatable, one per dataset)")
    ap.add_argument("--out", type=Path, default=None,
                    help="directory for offline_quality.md / .csv (created)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or any(p < 1 for p in args.per_class):
        ap.error("--seeds and --per-class must be >= 1")
    features = {}
    for item in args.features:
        name, sep, pattern = item.partition("=")
        if not sep or name not in DATASETS or not pattern:
            ap.error(f"--features {item!r}: expected DATASET=FILE with DATASET one of "
                     f"{', '.join(DATASETS)}")
        features[name] = pattern

    from ..io import atomic_write_csv, atomic_write_text

    rows = run_grid(args.datasets, args.per_class, args.seeds, args.samplers,
                    args.propagators, args.fmnist_n, features=features)
    command = "python -m as3l_plugin.benchmarks.offline_quality " + " ".join(
        argv if argv is not None else sys.argv[1:])
    report = summarize(rows, command.strip())
    print(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        keys = list(rows[0])
        atomic_write_csv(args.out / "offline_quality.csv", keys,
                         [[r[k] for k in keys] for r in rows])
        atomic_write_text(args.out / "offline_quality.md", report + "\n")
        print(f"wrote {args.out / 'offline_quality.md'} and offline_quality.csv",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
