"""Pretraining recipes against the quantities AS3L needs: a resumable sweep.

Run (one thread per process; every step resumes where it stopped)::

    python -m as3l_plugin.benchmarks.feature_recipes --recipes simsiam16,simclr16 \\
        --epochs 20 --snapshots 5,10 --prior-seeds 0-4 --work runs/recipes
    python -m as3l_plugin.benchmarks.feature_recipes --report --work runs/recipes

For every recipe (:data:`RECIPES`: objective, view size, augmentation, learning rate) and
pretraining seed, the backbone is pretrained for ``--epochs`` epochs (the cosine schedule
spans them all), with backbones also saved after the ``--snapshots`` epochs. Every saved
backbone is evaluated on the training split: linear probe and cosine kNN (test split,
all labels), K-means purity (K = classes), and the AS3L prior at 1 label/class
(``as3l`` selection, ``seeded_kmeans`` prior from the selected samples' true labels, prior
accuracy on the other training samples) for each ``--prior-seeds`` seed. Results are
``WORK/rows/*.json``, one file per (recipe, pretraining seed, epochs, snapshot; several
processes may share ``WORK``), with the
pretraining time up to that snapshot (wall and process CPU seconds, from the checkpoint's
history), so that prior against minutes is one table. ``--report`` prints the Markdown
table (mean and std over prior seeds) and writes ``WORK/prior_vs_minutes.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

#: recipe name -> keyword arguments of :class:`as3l_plugin.features.pretrain.SimSiamPretrainer`
#: (``augment`` as keyword overrides of the dataset's default augmentation)
RECIPES = {
    "simsiam16": {"objective": "simsiam", "image_size": 16},
    "simsiam28": {"objective": "simsiam", "image_size": 28},
    "simclr16": {"objective": "simclr", "image_size": 16, "temperature": 0.5},
    "simclr16_t02": {"objective": "simclr", "image_size": 16, "temperature": 0.2},
    "simclr28": {"objective": "simclr", "image_size": 28, "temperature": 0.5},
    "simclr16_crop02": {"objective": "simclr", "image_size": 16, "temperature": 0.5,
                        "augment": {"scale": (0.2, 1.0)}},
    "vicreg16": {"objective": "vicreg", "image_size": 16},
    # width lever: cnn4 at 1.5x width; run it with --epochs 14 for vicreg16's CPU time
    "vicreg16_wide": {"objective": "vicreg", "image_size": 16, "net": "cnn4_wide"},
    # paired precision check: vicreg16 without CPU bfloat16 autocast
    "vicreg16_fp32": {"objective": "vicreg", "image_size": 16, "cpu_bf16": False},
}


def _seeds(text: str):
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _augment(ds, overrides):
    import dataclasses

    from ..features.augment import augmentation_for
    base = augmentation_for(ds.name, ds.in_channels)
    return dataclasses.replace(base, **overrides) if overrides else base


def run_recipe(name, *, dataset, work: Path, seed, epochs, snapshots, prior_seeds, log=print):
    import torch

    from ..datasets import load_dataset
    from ..features.evaluate import linear_eval
    from ..features.extract import extract_features
    from ..features.pretrain import SimSiamPretrainer
    from ..io import atomic_write_text
    from .features_quality import as3l_prior

    ds = load_dataset(dataset)
    params = dict(RECIPES[name])
    aug = _augment(ds, params.pop("augment", None))
    out = work / f"{dataset}_{name}_s{seed}_e{epochs}"
    rows_dir = work / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    row_path = lambda e: rows_dir / f"{out.name}_snap{e}.json"  # noqa: E731
    snaps = sorted({int(e) for e in snapshots if 0 < int(e) < epochs} | {epochs})
    if all(row_path(e).is_file() for e in snaps):
        return
    t = time.perf_counter()
    SimSiamPretrainer(epochs=epochs, seed=seed, augment=aug, snapshot_epochs=snaps,
                      progress=False, **params).fit(ds, out)
    log(f"{name} seed {seed}: pretraining done ({time.perf_counter() - t:.0f} s this call)")
    hist = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)["history"]
    C = ds.num_classes
    for e in snaps:
        if row_path(e).is_file():
            continue
        ck = out / ("backbone.pth" if e == epochs else f"backbone_e{e}.pth")
        t = time.perf_counter()
        tr = extract_features(ck, ds, split="train", progress=False)
        te = extract_features(ck, ds, split="test", progress=False)
        ev = linear_eval(tr, ds.y_train, te, ds.y_test, num_classes=C)
        pri = [as3l_prior(tr, ds.y_train, C, s) for s in prior_seeds]
        pri = [(float(a), int(c)) for a, c in pri]
        row = {"dataset": dataset, "recipe": name, "seed": seed, "epochs": epochs,
               "snapshot": e, "params": {**params, "augment": repr(aug)},
               "pretrain_wall_s": float(sum(h["seconds"] for h in hist[:e])),
               "pretrain_cpu_s": float(sum(h["cpu_seconds"] for h in hist[:e])),
               "z_std": float(hist[e - 1]["z_std"]), "linear_acc": ev.linear_acc,
               "knn_acc": ev.knn_acc, "kmeans_purity": ev.kmeans_purity,
               "prior_seeds": list(prior_seeds), "prior_acc": [p for p, _ in pri],
               "coverage": [c for _, c in pri], "eval_s": time.perf_counter() - t,
               "load": os.getloadavg()[0]}
        atomic_write_text(row_path(e), json.dumps(row, indent=1))
        log(f"{name} seed {seed} epoch {e}/{epochs}: linear {100 * ev.linear_acc:.1f} kNN "
            f"{100 * ev.knn_acc:.1f} purity {100 * ev.kmeans_purity:.1f} prior "
            f"{100 * np.mean(row['prior_acc']):.1f} ± {100 * np.std(row['prior_acc']):.1f} "
            f"({row['pretrain_cpu_s'] / 60:.1f} CPU-min pretraining)")


def report(work: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((work / "rows").glob("*.json"))]
    rows.sort(key=lambda r: (r["dataset"], r["recipe"], r["seed"], r["epochs"], r["snapshot"]))
    out = ["| dataset | recipe | pretrain seed | epochs (of) | CPU-min | linear | kNN | purity | "
           "prior @1/class (prior seeds) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = 100 * np.asarray(r["prior_acc"])
        seeds = r["prior_seeds"]
        out.append(f"| {r['dataset']} | {r['recipe']} | {r['seed']} | {r['snapshot']} "
                   f"({r['epochs']}) | {r['pretrain_cpu_s'] / 60:.1f} | "
                   f"{100 * r['linear_acc']:.1f} | {100 * r['knn_acc']:.1f} | "
                   f"{100 * r['kmeans_purity']:.1f} | {p.mean():.1f} ± {p.std():.1f} "
                   f"({seeds[0]}–{seeds[-1]}) |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        curves = {}
        for r in rows:
            curves.setdefault((r["dataset"], r["recipe"], r["seed"], r["epochs"]), []).append(
                (r["pretrain_cpu_s"] / 60, 100 * np.mean(r["prior_acc"])))
        for (d, rec, s, e), pts in sorted(curves.items()):
            pts.sort()
            ax.plot(*zip(*pts), marker="o", label=f"{d} {rec} (seed {s}, {e} ep)")
        ax.set_xlabel("pretraining CPU-minutes (1 thread)")
        ax.set_ylabel("AS3L prior accuracy @1 label/class (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(work / "prior_vs_minutes.png", dpi=120)
    except ImportError:  # pragma: no cover
        pass
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--recipes", default="simsiam16,simclr16",
                    help=f"comma-separated, from: {', '.join(RECIPES)}")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--snapshots", default="5,10", help="comma-separated epochs")
    ap.add_argument("--seed", type=int, default=0, help="pretraining seed")
    ap.add_argument("--prior-seeds", default="0-4", help="e.g. 0-4 or 5,6,7")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("runs/feature_recipes"))
    ap.add_argument("--report", action="store_true", help="print the table of WORK and exit")
    args = ap.parse_args(argv)
    if args.report:
        print(report(args.work))
        return 0
    import torch
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.recipes.split(","):
        if name not in RECIPES:
            ap.error(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    for name in args.recipes.split(","):
        run_recipe(name, dataset=args.dataset, work=args.work, seed=args.seed,
                   epochs=args.epochs, snapshots=[int(e) for e in args.snapshots.split(",")],
                   prior_seeds=_seeds(args.prior_seeds), log=lambda s: print(s, flush=True))
    print(report(args.work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
