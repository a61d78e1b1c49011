"""``as3l select``, ``as3l prior``, ``as3l evaluate-prior``: the offline stage on a feature file.

Workflow::

    as3l select --features F.npy --budget 10 --sampler as3l --seed 0 --out sel/
    #   -> sel/lb_labels10_1_seed0_idx.npy (+ .json sidecar), sel/ulb_labels10_1_seed0_idx.npy,
    #      sel/to_annotate.csv  (index,label — fill in the label column)
    as3l prior --features F.npy --select-dir sel/ --num-classes 10 --out prior.npy
    as3l evaluate-prior --prior prior.npy --labels y.npy     # when true labels exist

Argparse and printing only: the work is done by the library functions of
:mod:`as3l_plugin.offline` (``select_to_dir``, ``prior_from_selection``, ``evaluate_prior``),
which import numpy / the samplers / the propagators when they run, so ``as3l select --help``
is fast. Their outputs are written atomically and rolled back on failure (see there).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from ..offline import DEFAULT_PROPAGATOR, DEFAULT_SAMPLER, evaluate_prior, \
    prior_from_selection, select_to_dir  # noqa: F401 (public names, also importable here)


# --------------------------------------------------------------------------- helpers
def parse_param(text: str):
    """``'k=v'`` → ``(k, value)``; values are Python/JSON literals when they parse
    (``10``, ``0.5``, ``true``, ``10,20,30`` → tuple, ``[1,2]``), else strings."""
    from ..errors import ParameterError

    if "=" not in text:
        raise ParameterError(f"{text!r} is not NAME=VALUE (e.g. --param ks=10,20,30)",
                             field="--param")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key.isidentifier():
        raise ParameterError(f"{key!r} is not a parameter name", field="--param")
    low = raw.strip().lower()
    if low in ("true", "false"):
        return key, low == "true"
    if low in ("none", "null"):
        return key, None
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return key, value


def _params(items) -> dict:
    from ..errors import ParameterError

    out = {}
    for item in items or ():
        k, v = parse_param(item)
        if k in out:
            raise ParameterError(f"{k} given twice", field="--param")
        out[k] = v
    return out


def _print(msg: str = ""):
    print(msg, flush=True)


# --------------------------------------------------------------------------- select
def cmd_select(args) -> int:
    from ..datasets import USER_LOADERS
    paths = None
    if args.dataset in USER_LOADERS and args.data_dir:  # folder: image paths in the CSV
        from .features import load_dataset_args
        paths = getattr(load_dataset_args(args, args.dataset), "paths", None)
    meta = select_to_dir(args.features, args.budget, sampler=args.sampler,
                         params=_params(args.param), seed=args.seed, out_dir=args.out,
                         labels=args.labels, dataset=args.dataset, force=args.force,
                         image_paths=paths)
    C = meta.get("num_classes")
    if C is not None and meta["budget"] < C:
        _print(f"warning: budget {meta['budget']} < {C} classes: at least {C - meta['budget']} "
               "class(es) will have no labeled sample and the prior never predicts them")
    p = meta["paths"]
    _print(f"selected {meta['budget']} of {meta['n']} samples with sampler "
           f"{meta['sampler']} (seed {meta['seed']})")
    _print(f"  index : {p['lb_index']}  (+ {Path(p['ulb_index']).name}, sidecar .json)")
    _print(f"  labels: {p['annotation']}")
    if meta["labels_prefilled"]:
        _print(f"  label column pre-filled from {args.labels} (simulation); class coverage "
               f"{meta['class_coverage']}")
        _print(f"next: as3l prior --features {args.features} --select-dir {args.out} "
               "--num-classes C --out prior.npy")
    else:
        ds = "" if meta.get("dataset") else " --dataset NAME"
        _print(f"next: label the images in a browser with `as3l annotate {args.out} --serve"
               f"{ds}`, or fill in the 'label' column (class ids or names), then run")
        _print(f"  as3l prior --features {args.features} --select-dir {args.out} "
               "--num-classes C --out prior.npy")
    return 0


# --------------------------------------------------------------------------- prior
def cmd_prior(args) -> int:
    from ..errors import ParameterError

    if args.index is None and args.select_dir is None:
        raise ParameterError("give --select-dir DIR (from `as3l select --out`) or --index "
                             "lb_..._idx.npy", field="--index")
    from ..io import find_index
    index = Path(args.index) if args.index else find_index(args.select_dir)
    labels_csv = args.labels_csv
    if labels_csv is None and args.oracle_labels is None:
        labels_csv = index.parent / "to_annotate.csv"
    meta = prior_from_selection(args.features, index=index, labels_csv=labels_csv,
                                oracle_labels=args.oracle_labels, num_classes=args.num_classes,
                                propagator=args.propagator, params=_params(args.param),
                                seed=args.seed, out=args.out, dataset=args.dataset,
                                data_dir=args.data_dir)
    from ..datasets import CLASS_NAMES
    per_class = meta["labeled_per_class"]
    missing = [c for c, k in enumerate(per_class) if k == 0]
    names = CLASS_NAMES.get(args.dataset or meta.get("dataset"))
    if names is not None and len(names) >= len(per_class):  # name the classes in the report
        per_class = ", ".join(f"{nm} {k}" for nm, k in zip(names, per_class))
        missing = [f"{c} ({names[c]})" for c in missing]
    _print(f"prior: {args.out}  ({meta['n']} x {meta['num_classes']} float32, "
           f"propagator {meta['propagator']}, seed {meta['seed']})")
    _print(f"  from {meta['budget']} labels ({meta['labels_source']}); labeled per class: "
           f"{per_class}")
    _print(f"  rows with label evidence: {100 * meta['coverage']:.1f}% "
           f"({meta['n_uniform']} uniform)")
    if missing:
        _print(f"  warning: class(es) {', '.join(map(str, missing))} have no labeled sample; "
               "the prior never predicts them")
    return 0


# --------------------------------------------------------------------------- evaluate-prior
def cmd_evaluate_prior(args) -> int:
    import json

    res = evaluate_prior(args.prior, args.labels, exclude=args.exclude, n_bins=args.bins)
    if args.json:
        _print(json.dumps(res, indent=2, sort_keys=True))
        return 0
    rows = "unlabeled rows" if res["excluded_from"] else "all rows (no --exclude)"
    _print(f"prior {res['prior']}: {res['n']} x {res['num_classes']}")
    _print(f"  accuracy ({rows}, n={res['n_evaluated']}): {100 * res['accuracy']:.2f}%")
    if res["class_coverage"] is not None:
        _print(f"  class coverage of the labeled set: {res['class_coverage']}/"
               f"{res['num_classes']}")
    _print(f"  ECE ({res['n_bins']} bins): {100 * res['ece']:.2f}%   "
           f"mean confidence: {100 * res['mean_confidence']:.2f}%")
    if res["excluded_from"]:
        _print(f"  labeled rows excluded: {res['excluded_from']}")
    return 0


# --------------------------------------------------------------------------- argparse
def _known_names(kind: str) -> str:
    # only a hint in --help: never import the heavy registries here
    return {"sampler": "as3l, random, kmedoids, coreset, typiclust, probcover",
            "propagator": "seeded_kmeans, label_spreading, knn"}[kind]


class _Formatter(argparse.HelpFormatter):
    """Append "(default: X)" only where there is a meaningful default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is not None and action.default is not False \
                and action.default != argparse.SUPPRESS and "default" not in text:
            text += " (default: %(default)s)"
        return text


def register(subparsers) -> None:
    fmt = _Formatter

    p = subparsers.add_parser(
        "select", formatter_class=fmt,
        help="choose which samples to label (writes the index + to_annotate.csv)",
        description="Choose `budget` samples to label from a feature file. Writes, in --out: "
                    "the USB index lb_labels{B}_1_seed{S}_idx.npy (int64, the sampler's order) "
                    "with its JSON sidecar, the complement ulb_labels{B}_1_seed{S}_idx.npy, "
                    "and to_annotate.csv (header index,label; fill in the label column, or "
                    "pass --labels to pre-fill it with true labels for a simulation).")
    p.add_argument("--features", required=True, metavar="F.npy",
                   help="feature matrix (n, d), float")
    p.add_argument("--budget", required=True, type=int, metavar="B",
                   help="number of samples to label")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER,
                   help=f"selection method: {_known_names('sampler')}")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="sampler hyper-parameter (repeatable), e.g. --param n_runs=6")
    p.add_argument("--seed", type=int, default=0, help="random seed (also in the file names)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--labels", metavar="y.npy",
                   help="simulation only: true labels (n,) to pre-fill to_annotate.csv")
    p.add_argument("--dataset", help="dataset name recorded in the sidecars (optional); "
                   "with folder and --data-dir, to_annotate.csv gets each image's path")
    from .features import add_dataset_args
    add_dataset_args(p)
    p.add_argument("--force", action="store_true",
                   help="overwrite a to_annotate.csv that already holds labels")
    p.set_defaults(func=cmd_select)

    p = subparsers.add_parser(
        "prior", formatter_class=fmt,
        help="propagate the annotated labels into prior.npy (n x C)",
        description="Read the labels of the selected samples (the annotated to_annotate.csv, "
                    "or --oracle-labels for benchmarks), check them against the selection and "
                    "the feature checksum, and write prior.npy (float32 n x C, dataset order, "
                    "rows sum to 1) with its JSON sidecar.")
    p.add_argument("--features", required=True, metavar="F.npy",
                   help="the feature file the selection was made on")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--select-dir", metavar="DIR", help="the --out directory of `as3l select`")
    g.add_argument("--index", metavar="lb_..._idx.npy", help="the labeled index file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labels-csv", metavar="CSV",
                   help="annotations index,label[,path]; label = class id or name "
                        "(default: to_annotate.csv next to the index)")
    g.add_argument("--oracle-labels", metavar="y.npy",
                   help="benchmarks: true labels (n,) of the whole dataset")
    p.add_argument("--num-classes", type=int, metavar="C",
                   help="number of classes (required with a CSV; default max label + 1 with "
                        "--oracle-labels)")
    p.add_argument("--propagator", default=DEFAULT_PROPAGATOR,
                   help=f"propagation method: {_known_names('propagator')}")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="propagator hyper-parameter (repeatable), e.g. --param ks=10,20,30")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--dataset", help="dataset whose class names the CSV may use (default: "
                   "the one recorded by `as3l select --dataset`)")
    p.add_argument("--data-dir", help="folder of the dataset (to read its class names)")
    p.add_argument("--out", required=True, metavar="prior.npy", help="output prior file")
    p.set_defaults(func=cmd_prior)

    p = subparsers.add_parser(
        "evaluate-prior", formatter_class=fmt,
        help="accuracy, class coverage and ECE of a prior against true labels",
        description="Score a prior against the dataset's true labels: argmax accuracy and "
                    "ECE on the unlabeled rows, class coverage of the labeled set. The "
                    "labeled rows come from --exclude, else from the prior's sidecar.")
    p.add_argument("--prior", required=True, metavar="P.npy")
    p.add_argument("--labels", required=True, metavar="y.npy", help="true labels (n,)")
    p.add_argument("--exclude", metavar="INDEX.npy",
                   help="labeled index to leave out (default: the one in the prior's sidecar)")
    p.add_argument("--bins", type=int, default=15, help="ECE bins")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_evaluate_prior)


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main
    sys.exit(main(sys.argv[1:]))
