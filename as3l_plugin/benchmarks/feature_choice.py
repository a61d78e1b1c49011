"""Which feature set should AS3L use? Every candidate's prior, and what ``auto`` picks.

Run::

    python -m as3l_plugin.benchmarks.feature_choice --dataset digits \\
        --checkpoint runs/digits/backbone.pth --seeds 0-2 --work runs/choice
    python -m as3l_plugin.benchmarks.feature_choice --dataset fashion_mnist \\
        --checkpoint runs/fm/backbone.pth --seeds 5-9 --work runs/choice

Candidates over the training split: ``pixels`` (PCA-50 of the pixels), ``self`` (the
backbone's features) and ``fine`` (Eq. 1 fine-tuning of ``self`` with the pipeline's
defaults: ``K = budget``, fitted with the seed). For every budget (``--per-class``, default
1 and 4 labels per class) and seed: each candidate's AS3L prior accuracy (``as3l``
selection + ``seeded_kmeans`` prior from the selected samples' true labels, accuracy on the
other samples), the :func:`~as3l_plugin.features.choose_features` score of each (no labels)
and its pick. Prints per (budget, candidate) the mean prior, how often ``auto`` picked it,
and ``auto``'s mean prior against the best single candidate's; rows are kept in
``WORK/<dataset>_<checkpoint stem>.json`` (resumable per seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def evaluate(dataset, checkpoint, *, seeds, per_class=(1, 4), work: Path,
             candidates=("pixels", "self", "fine"), auto_among=None, log=print):
    from ..datasets import load_dataset
    from ..features.choose import CRITERION, choose_features, hog_features, pixel_features
    from ..features.extract import extract_features
    from ..features.finetune import finetune_features
    from ..io import atomic_write_text
    from .features_quality import as3l_prior

    from ..pipeline import AUTO_CANDIDATES
    among = tuple(auto_among or [c for c in AUTO_CANDIDATES if c in candidates])
    ds = load_dataset(dataset)
    y, C = np.asarray(ds.y_train), ds.num_classes
    out = work / f"{dataset}_{Path(checkpoint).parent.name}_{Path(checkpoint).stem}.json"
    rows = json.loads(out.read_text()) if out.is_file() else []
    rows = [r for r in rows if r.get("criterion", "cross_view") == CRITERION]
    done = {(r["budget"], r["seed"]) for r in rows}
    judge = None  # HOG of the images, computed when a (budget, seed) is left to do
    feats = {}
    if "pixels" in candidates:
        feats["pixels"] = pixel_features(ds.x_train)
    if {"self", "fine"} & set(candidates):
        feats["self"] = extract_features(checkpoint, ds, split="train", progress=False)
    for pc in per_class:
        B = pc * C
        for s in seeds:
            if (B, s) in done:
                continue
            t = time.perf_counter()
            cand = {k: feats[k] for k in candidates if k != "fine"}
            if "fine" in candidates:
                cand["fine"] = finetune_features(feats["self"], budget=B, seed=s,
                                                 progress=False)
            if judge is None and CRITERION == "judge":
                judge = hog_features(ds.x_train, progress=True)
            pick, scores = choose_features({k: cand[k] for k in among}, B, seed=s,
                                           criterion=CRITERION, judge=judge)
            prior = {k: float(as3l_prior(X, y, C, s, budget=B)[0]) for k, X in cand.items()}
            rows.append({"dataset": dataset, "checkpoint": str(checkpoint), "budget": B,
                         "seed": s, "among": list(among), "criterion": CRITERION,
                         "scores": scores, "pick": pick,
                         "prior": prior,
                         "seconds": time.perf_counter() - t})
            atomic_write_text(out, json.dumps(rows, indent=1))
            log(f"B={B} seed {s}: " + "  ".join(
                f"{k} {100 * prior[k]:.1f}" + (f" (score {scores[k]:.3f})" if k in scores
                                               else "") for k in cand)
                + f"  -> auto picks {pick}")
    return rows


def summary(rows) -> str:
    def ms(v):  # mean ± standard error over seeds, %
        v = 100 * np.asarray(v)
        return v.mean(), (v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan"))

    out = ["| dataset | budget | candidate | prior (mean ± s.e. over seeds) | picked by auto |",
           "|---|---|---|---|---|"]
    for B in sorted({r["budget"] for r in rows}):
        rs = [r for r in rows if r["budget"] == B]
        names = list(rs[0]["prior"])
        stats = {k: ms([r["prior"][k] for r in rs]) for k in names}
        for k in names:
            out.append(f"| {rs[0]['dataset']} | {B} | {k} | {stats[k][0]:.1f} ± "
                       f"{stats[k][1]:.1f} | {sum(r['pick'] == k for r in rs)}/{len(rs)} |")
        auto = ms([r["prior"][r["pick"]] for r in rs])
        best = max(stats, key=lambda k: stats[k][0])
        out.append(f"| {rs[0]['dataset']} | {B} | **auto** | {auto[0]:.1f} ± {auto[1]:.1f} "
                   f"({auto[0] - stats[best][0]:+.1f} vs best single: {best}) | seeds "
                   f"{', '.join(str(r['seed']) for r in rs)} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--checkpoint", required=True, help="backbone.pth of the feature stage")
    ap.add_argument("--seeds", default="0-2")
    ap.add_argument("--per-class", default="1,4")
    ap.add_argument("--candidates", default="pixels,self,fine",
                    help="feature sets whose prior is measured")
    ap.add_argument("--auto-among", default=None,
                    help="candidates auto chooses among (default: the pipeline's "
                         "AUTO_CANDIDATES present in --candidates)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("runs/feature_choice"))
    args = ap.parse_args(argv)
    import torch

    from .feature_recipes import _seeds
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = evaluate(args.dataset, args.checkpoint, seeds=_seeds(args.seeds),
                    per_class=[int(v) for v in args.per_class.split(",")], work=args.work,
                    candidates=tuple(args.candidates.split(",")),
                    auto_among=args.auto_among and tuple(args.auto_among.split(",")),
                    log=lambda s: print(s, flush=True))
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
