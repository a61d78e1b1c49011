"""Per class: how many labels, how good the prior, and where the trained model ends.

Run::

    python -m as3l_plugin.benchmarks.prior_per_class --dataset fashion_mnist \\
        --bench runs/bench15/confirm4_s5 runs/bench15/confirm4_s6 --samplers as3l typiclust

For every labeled set of the given ``as3l bench`` directories
(``labels/seed<S>/<sampler>_b<B>/``: its ``labels/labels.csv`` and the prior the bench stored,
``prior_<propagator>/prior.npy``) it prints, per class: the number of labels, the prior's
recall on the unlabeled training rows (argmax accuracy within the class), and, for each
finished cell of the bench trained on that labeled set (a ``cells.csv`` row), the per-class test
accuracy at its last evaluation (the diagonal of the confusion matrix USB logged,
:func:`as3l_plugin.report.final_confusion`). ``gap`` is the mean over classes of
``|final − prior recall|`` (points): how close a trained model ends to its prior class by
class. A last table averages each (sampler, budget) over the seeds given.

Reads what the bench stored; recomputes nothing (no features, no K-means). Output: markdown
on stdout (and ``--out FILE``, written atomically).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from .prior_calibration import labeled_sets


def run(dataset, benches, samplers=None, propagator="seeded_kmeans"):
    """One dict per labeled set: ``bench, seed, sampler, budget``, ``counts`` int64 ``(C,)``,
    ``recall`` float64 ``(C,)`` (the prior's, NaN for a class with no unlabeled row), ``acc``
    (prior accuracy on the unlabeled rows) and ``cells``: ``{algorithm: (final test accuracy,
    float64 (C,) per-class test accuracy)}``."""
    from ..annotations import read_label_table
    from ..bench import CELLS_CSV, cell_per_class, read_rows
    from ..datasets import load_dataset
    from ..metrics import prior_accuracy
    from ..report import per_class_accuracy
    from ..usb.prior_data import load_prior
    ds = load_dataset(dataset, progress=False)
    y = np.asarray(ds.y_train)
    C = ds.num_classes
    out = []
    for bench in map(Path, benches):
        sets = labeled_sets(bench, samplers)
        if not sets:
            raise SystemExit(f"{bench}: no labels/seed*/<sampler>_b*/labels/labels.csv here")
        cells = read_rows(bench / CELLS_CSV)
        for seed, sampler, budget, path in sets:
            prior_path = path.parent.parent / f"prior_{propagator}" / "prior.npy"
            if not prior_path.is_file():
                continue
            idx, lab = read_label_table(path, C)
            P = load_prior(prior_path, n_samples=len(y), num_classes=C)
            trained = {}
            for r in cells:
                if (r["sampler"], int(r["budget"]), int(r["seed"])) == (sampler, budget, seed):
                    d = cell_per_class(bench, r, C)
                    if d is not None:
                        trained[r["algorithm"]] = (float(r["final_acc"]), d)
            out.append({"bench": bench.name, "seed": seed, "sampler": sampler, "budget": budget,
                        "counts": np.bincount(lab, minlength=C),
                        "recall": per_class_accuracy(P.argmax(axis=1), y, C, exclude=idx),
                        "acc": prior_accuracy(P, y, exclude=idx), "cells": trained})
    return out


def _gap(final, recall) -> float:
    """Mean over classes of ``|final - recall|`` in points; both float64 ``(C,)`` in [0, 1]
    (NaN classes left out)."""
    return float(100 * np.nanmean(np.abs(final - recall)))


def tables(sets, names) -> str:
    """Markdown: one block of rows per labeled set of :func:`run` (``sets``), then the mean
    over seeds per (sampler, budget) — labels and prior recall over every seed given, each
    algorithm's final accuracy over the seeds that have its cell (their number in brackets).
    ``names``: the ``C`` class names, column order."""
    from ..report import markdown_table
    head = ["labeled set", "row", "all"] + list(names) + ["gap"]
    fmt = lambda v: "–" if not np.isfinite(v) else f"{100 * v:.0f}"   # noqa: E731
    rows = []
    for s in sets:
        what = f"{s['bench']} seed {s['seed']}: {s['sampler']} ({s['budget']})"
        rows.append([what, "labels", str(int(s["counts"].sum()))]
                    + [str(int(c)) for c in s["counts"]] + [""])
        rows.append(["", "prior recall", fmt(s["acc"])] + [fmt(v) for v in s["recall"]] + [""])
        for alg, (acc, d) in sorted(s["cells"].items()):
            rows.append(["", f"+ {alg} final", fmt(acc)] + [fmt(v) for v in d]
                        + [f"{_gap(d, s['recall']):.1f}"])
    groups = {}
    for s in sets:
        groups.setdefault((s["sampler"], s["budget"]), []).append(s)
    mean_rows = []
    for (sampler, budget), ss in sorted(groups.items()):
        mean_rows.append([f"{sampler} ({budget}), {len(ss)} seed(s)", "labels", ""]
                         + [f"{v:.1f}" for v in np.mean([s["counts"] for s in ss], axis=0)]
                         + [""])
        with warnings.catch_warnings():     # a class with no unlabeled row on any seed: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            recall = np.nanmean([s["recall"] for s in ss], axis=0)
        mean_rows.append(["", "prior recall", fmt(np.mean([s["acc"] for s in ss]))]
                         + [fmt(v) for v in recall] + [""])
        for alg in sorted({a for s in ss for a in s["cells"]}):
            have = [s for s in ss if alg in s["cells"]]
            finals = np.mean([s["cells"][alg][1] for s in have], axis=0)
            gaps = [_gap(s["cells"][alg][1], s["recall"]) for s in have]
            mean_rows.append(["", f"+ {alg} final ({len(have)})",
                              fmt(np.mean([s["cells"][alg][0] for s in have]))]
                             + [fmt(v) for v in finals]
                             + [f"{np.mean(gaps):.1f}"])
    return ("Per labeled set (labels: count per class; prior recall and final test accuracy: "
            "%, per class, `all`: over every class; gap: mean |final − prior recall|, points)\n\n"
            + markdown_table(head, rows) + "\n\nMean over seeds\n\n"
            + markdown_table(head, mean_rows) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m as3l_plugin.benchmarks.prior_per_class",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--bench", nargs="+", required=True, type=Path,
                    help="as3l bench directories (their labels/ folders and cells.csv are read)")
    ap.add_argument("--samplers", nargs="+", default=None,
                    help="only these samplers' labeled sets (default: all)")
    ap.add_argument("--propagator", default="seeded_kmeans",
                    help="whose stored prior to read (labels/.../prior_<propagator>/prior.npy)")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = ap.parse_args(argv)
    from ..datasets import class_names
    sets = run(args.dataset, args.bench, args.samplers, args.propagator)
    if not sets:
        raise SystemExit(f"no stored prior_{args.propagator}/prior.npy in the labeled sets of "
                         + ", ".join(map(str, args.bench)))
    text = tables(sets, class_names(args.dataset))
    print(text, flush=True)
    if args.out is not None:
        from ..io import atomic_write_text
        command = "python -m as3l_plugin.benchmarks.prior_per_class " + " ".join(
            argv if argv is not None else sys.argv[1:])
        atomic_write_text(args.out, f"Command: `{command}`\n\n{text}")


if __name__ == "__main__":
    main()
