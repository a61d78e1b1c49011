"""Does the prior's confidence say where it is wrong? ``uncovered='ignore'`` vs ``'uniform'``.

Run::

    python -m as3l_plugin.benchmarks.prior_calibration --dataset fashion_mnist \\
        --bench runs/bench15/confirm_s5 runs/bench15/confirm_s6 \\
        --features 'shared/pretrain_seed5/features/f_self.npy' --samplers as3l typiclust

For every labeled set of the given ``as3l bench`` directories
(``labels/seed<S>/<sampler>_b<B>/labels/labels.csv``: the oracle labels the bench's prior was
made from), the seeded-K-means prior (:class:`~as3l_plugin.propagation.SeededKMeansPropagator`,
seed ``S``, default ``ks``) is made twice — ``uncovered='ignore'`` (a K-means run whose cluster
holds no labeled sample adds nothing for its members; the default) and ``'uniform'`` (it adds
a uniform vote, so samples far from every label get a flatter row) — and scored on the
unlabeled rows: argmax accuracy, ECE (15 bins), mean top-class confidence, and the accuracy
of the 25 / 50 / 75 % most confident rows (:func:`as3l_plugin.metrics.selective_accuracy`).
Both modes have nearly the same argmax; what differs is whether the confidence ranks the
mistakes, which decides how much ``normalize(prior + p)`` in ``as3l_flexmatch`` trusts the
prior where it is wrong. No training; one CPU thread is enough (seconds per labeled set on
60,000 rows).

``--features`` is a path inside each bench directory (``{seed}`` and ``{budget}`` are
replaced), float32 ``(n, d)`` of the whole training split: the features the bench's prior
used (``prior_features``).

Output: a markdown table on stdout (and ``--out FILE``, written atomically).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

FRACTIONS = (0.25, 0.5, 0.75)
MODES = ("ignore", "uniform")
_LABELS = re.compile(r"seed(\d+)/(.+)_b(\d+)$")


def labeled_sets(bench: Path, samplers):
    """``(seed, sampler, budget, labels.csv path)`` of a bench directory, sorted."""
    out = []
    for d in sorted((bench / "labels").glob("seed*/*_b*")):
        m = _LABELS.search(d.relative_to(bench / "labels").as_posix())
        path = d / "labels" / "labels.csv"
        if m and path.is_file() and (not samplers or m.group(2) in samplers):
            out.append((int(m.group(1)), m.group(2), int(m.group(3)), path))
    return out


def score(prior, y, exclude) -> dict:
    from ..metrics import expected_calibration_error, prior_accuracy, selective_accuracy
    keep = np.ones(len(y), bool)
    keep[exclude] = False
    row = {"acc": prior_accuracy(prior, y, exclude),
           "ece": expected_calibration_error(prior, y, exclude=exclude),
           "conf": float(prior[keep].max(axis=1).mean())}
    for f in FRACTIONS:
        row[f"top{int(f * 100)}"] = selective_accuracy(prior, y, f, exclude=exclude)
    return row


def run(dataset, benches, features, samplers=None, log=print):
    from ..annotations import read_label_table
    from ..datasets import load_dataset
    from ..io import load_features
    from ..propagation import SeededKMeansPropagator
    ds = load_dataset(dataset)
    y = np.asarray(ds.y_train)
    rows = []
    for bench in map(Path, benches):
        sets = labeled_sets(bench, samplers)
        if not sets:
            raise SystemExit(f"{bench}: no labels/seed*/<sampler>_b*/labels/labels.csv here")
        for seed, sampler, budget, path in sets:
            X = load_features(bench / features.format(seed=seed, budget=budget))
            idx, lab = read_label_table(path, ds.num_classes)
            for mode in MODES:
                P = SeededKMeansPropagator(uncovered=mode).propagate(
                    X, idx, lab, ds.num_classes, seed=seed)
                r = {"bench": bench.name, "seed": seed, "sampler": sampler, "budget": budget,
                     "uncovered": mode, **score(P, y, idx)}
                rows.append(r)
                log(table([r], header=not rows[:-1]))
    return rows


def table(rows, header=True) -> str:
    cols = ["bench", "seed", "sampler", "budget", "uncovered", "acc", "ece", "conf"] + \
        [f"top{int(f * 100)}" for f in FRACTIONS]
    out = []
    if header:
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{100 * r[c]:.1f}" if isinstance(r[c], float) else
                                     str(r[c]) for c in cols) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m as3l_plugin.benchmarks.prior_calibration",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--bench", nargs="+", required=True, type=Path,
                    help="as3l bench directories (their labels/ folders are read)")
    ap.add_argument("--features", required=True,
                    help="the prior's features, a path inside each bench directory; "
                         "{seed} and {budget} are replaced")
    ap.add_argument("--samplers", nargs="+", default=None,
                    help="only these samplers' labeled sets (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args(argv)
    rows = run(args.dataset, args.bench, args.features, args.samplers,
               log=lambda s: print(s, flush=True))
    command = "python -m as3l_plugin.benchmarks.prior_calibration " + " ".join(
        argv if argv is not None else sys.argv[1:])
    if args.out is not None:
        from ..io import atomic_write_text
        atomic_write_text(args.out, f"Command: `{command}`\n\nAll figures in %, on the "
                                    f"unlabeled rows.\n\n{table(rows)}\n")


if __name__ == "__main__":
    main()
