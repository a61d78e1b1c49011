"""Feature quality for AS3L: raw pixels vs random-init CNN vs SimSiam ``f_self`` vs ``f_fine``.

Run::

    python -m as3l_plugin.benchmarks.features_quality --datasets digits
    python -m as3l_plugin.benchmarks.features_quality --datasets fashion_mnist \\
        --checkpoint fashion_mnist=runs/fm/backbone.pth --seeds 3

For every dataset:

1. a SimSiam checkpoint: the one given with ``--checkpoint NAME=PATH``, else
   ``as3l pretrain`` with the per-dataset defaults into ``WORK/NAME`` (resumable);
2. feature sets of the training and test splits: ``raw`` (pixels / 255), ``random`` (cnn4
   at its seed-0 initialisation, never trained: the control that tells what pretraining adds),
   ``f_self`` (the SimSiam backbone), and ``f_fine`` fine-tuned with Eq. 1 on ``f_self``
   (the layer fitted on the training split, applied to both splits) for every K in ``--ks``
   (default: K = budget = number of classes, the paper's rule, and 5 x budget) and every
   Adam learning rate in ``--lrs`` (default 1e-3); ``--l2-row`` adds ``f_self`` L2-normalised
   (fine-tuning's input: what normalisation alone does); ``--baselines none`` skips
   ``raw`` / ``random``;
3. all labels: linear-probe and cosine-kNN test accuracy, K-means purity (K = classes);
4. AS3L at 1 label per class, for ``--seeds`` seeds: ``as3l`` selection, ``seeded_kmeans``
   prior from the true labels of the selected samples, prior accuracy on the other training
   samples, and class coverage of the selection. ``f_fine`` is refitted per seed (fine-tuning
   seed = selection seed), so its spread includes fine-tuning's own randomness.

Prints a Markdown table (mean ± std over seeds) and writes ``WORK/features_quality.json``
(results of other datasets already in that file are kept).
Extracted features are cached in ``WORK/NAME/*.npy`` (reused while the checkpoint's
checksum matches), so re-running with other ``--ks`` / ``--seeds`` is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np


def as3l_prior(X, y, num_classes, seed, budget=None):
    """AS3L on features ``X`` (float32 ``(n, d)``) with true labels ``y``: ``as3l``
    selection of ``budget`` samples (default one per class), ``seeded_kmeans`` prior from
    their labels; returns (prior accuracy on the other samples, classes covered)."""
    from ..metrics import class_coverage, prior_accuracy
    from ..propagation import get_propagator
    from ..selection import get_sampler
    idx = get_sampler("as3l").select(X, budget or num_classes, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = get_propagator("seeded_kmeans").propagate(X, idx, y[idx], num_classes,
                                                          seed=seed)
    return prior_accuracy(prior, y, exclude=idx), class_coverage(y[idx], num_classes)


def _random_init_checkpoint(path: Path, ds):
    import torch

    from ..features.backbone import BACKBONE_FORMAT, build_backbone, encoder_state
    from ..io import atomic_write_bytes
    from ..features.backbone import torch_bytes
    if path.is_file():  # keep an existing one: its cached features stay valid
        return path
    torch.manual_seed(0)
    b = build_backbone("cnn4" if ds.in_channels == 1 else "cnn4_rgb")
    atomic_write_bytes(path, torch_bytes({
        "model": encoder_state(b), "net": "cnn4" if ds.in_channels == 1 else "cnn4_rgb",
        "dataset": ds.name, "format": BACKBONE_FORMAT, "num_features": b.num_features,
        "in_channels": ds.in_channels, "image_size": ds.image_size, "mean": ds.mean,
        "std": ds.std, "epochs": 0}))
    return path


def _cached_features(checkpoint, ds, split, path: Path):
    """Features of ``split``, reused from ``path`` when its sidecar names the same checkpoint
    bytes (extraction is the slow part on a CPU)."""
    from ..features.extract import extract_features, features_sidecar
    from ..io import load_features, read_sidecar, sha256_file, write_with_sidecar
    side = read_sidecar(path, required=False) if path.is_file() else None
    if side and side.get("checkpoint_sha256") == sha256_file(checkpoint):
        return load_features(path)
    X = extract_features(checkpoint, ds, split=split, progress=False)
    write_with_sidecar(path, X, features_sidecar(checkpoint, ds.name, split, X))
    return X


def run_dataset(name, *, checkpoint, work: Path, seeds, ks, threads, lrs=(1e-3,),
                baselines=("raw", "random"), l2_row=False, log=print):
    import torch

    from ..datasets import load_dataset
    from ..features.evaluate import linear_eval
    from ..features.finetune import FeatureFinetuner
    from ..features.pretrain import pretrain_simsiam

    torch.set_num_threads(threads)
    ds = load_dataset(name)
    C = ds.num_classes
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    if checkpoint is None:
        t = time.perf_counter()
        checkpoint = pretrain_simsiam(name, "cnn4", out=work / "simsiam", num_threads=threads,
                                      progress=False)
        timings["pretrain_s"] = time.perf_counter() - t
    ckpt_meta = torch.load(checkpoint, map_location="cpu", weights_only=False)
    rand = _random_init_checkpoint(work / "random_init.pth", ds)

    sets = {}
    if "raw" in baselines:
        sets["raw"] = (ds.x_train.reshape(len(ds.y_train), -1).astype(np.float32) / 255,
                       ds.x_test.reshape(len(ds.y_test), -1).astype(np.float32) / 255)
    for tag, ck in (("random", rand), ("f_self", checkpoint)):
        if tag == "random" and "random" not in baselines:
            continue
        t = time.perf_counter()
        sets[tag] = tuple(_cached_features(ck, ds, split, work / f"{tag}.{split}.npy")
                          for split in ("train", "test"))
        timings[f"extract_{tag}_s"] = time.perf_counter() - t
    rows = []

    def evaluate(tag, tr, te, prior_fn):
        t = time.perf_counter()
        r = linear_eval(tr, ds.y_train, te, ds.y_test, num_classes=C)
        accs, covs = zip(*(prior_fn(s) for s in seeds))
        row = {"features": tag, "dim": int(tr.shape[1]), "linear_acc": r.linear_acc,
               "knn_acc": r.knn_acc, "kmeans_purity": r.kmeans_purity,
               "prior_acc_mean": float(np.mean(accs)), "prior_acc_std": float(np.std(accs)),
               "prior_acc": [float(a) for a in accs], "coverage_mean": float(np.mean(covs)),
               "seconds": time.perf_counter() - t}
        rows.append(row)
        log(f"  {tag:14s} linear {100 * r.linear_acc:5.1f}  kNN {100 * r.knn_acc:5.1f}  purity "
            f"{100 * r.kmeans_purity:5.1f}  prior {100 * row['prior_acc_mean']:5.1f} ± "
            f"{100 * row['prior_acc_std']:.1f}  coverage {row['coverage_mean']:.1f}")

    if l2_row:  # fine-tuning's epoch 0: the row normalisation alone, no training
        from ..features.finetune import l2_normalize
        sets["f_self L2"] = tuple(l2_normalize(X) for X in sets["f_self"])
    for tag, (tr, te) in sets.items():
        evaluate(tag, tr, te, lambda s, X=tr: as3l_prior(X, ds.y_train, C, s))
    f_self, f_self_test = sets["f_self"]
    for K in ks:
        for lr in lrs:
            fits = {}

            def fine(s, K=K, lr=lr, fits=fits):
                if s not in fits:
                    fits[s] = FeatureFinetuner(n_clusters=K, lr=lr, seed=s,
                                               progress=False).fit(f_self)
                return fits[s]

            t = time.perf_counter()
            ft0 = fine(seeds[0])
            suffix = "" if len(lrs) == 1 and lr == 1e-3 else f" lr={lr:g}"
            timings[f"finetune_K{K}{suffix.replace(' ', '_')}_s"] = time.perf_counter() - t
            evaluate(f"f_fine K={K}{suffix}", ft0.transform(f_self), ft0.transform(f_self_test),
                     lambda s, fine=fine: as3l_prior(fine(s).transform(f_self), ds.y_train, C, s))
    return {"dataset": name, "checkpoint": str(checkpoint), "n_train": int(len(ds.y_train)),
            "pretrain_epochs": ckpt_meta.get("epochs"), "pretrain_config": ckpt_meta.get("config"),
            "seeds": list(seeds), "rows": rows, "timings": timings}


def markdown(results) -> str:
    out = ["| dataset | features | linear probe | kNN | K-means purity | AS3L prior @1/class "
           "(mean ± std) | class coverage |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for r in res["rows"]:
            out.append(f"| {res['dataset']} | {r['features']} | {100 * r['linear_acc']:.1f} | "
                       f"{100 * r['knn_acc']:.1f} | {100 * r['kmeans_purity']:.1f} | "
                       f"{100 * r['prior_acc_mean']:.1f} ± {100 * r['prior_acc_std']:.1f} | "
                       f"{r['coverage_mean']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"])
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ks", default=None,
                    help="comma-separated K of the fine-tuning runs (default: C and 5C)")
    ap.add_argument("--lrs", default="1e-3",
                    help="comma-separated Adam learning rates of the fine-tuning (default 1e-3)")
    ap.add_argument("--baselines", default="raw,random",
                    help="comma-separated rows besides f_self: raw, random (default both; "
                         "'none' for neither)")
    ap.add_argument("--l2-row", dest="l2_row", action="store_true",
                    help="add f_self L2-normalised (fine-tuning's input, before training)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/as3l_features_quality"))
    args = ap.parse_args(argv)
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    results = []
    for name in args.datasets:
        print(f"{name}:", flush=True)
        from ..datasets import load_dataset
        C = load_dataset(name).num_classes
        ks = [int(k) for k in args.ks.split(",")] if args.ks else [C, 5 * C]
        results.append(run_dataset(name, checkpoint=ckpts.get(name), work=args.work / name,
                                   seeds=list(range(args.seeds)), ks=ks, threads=args.threads,
                                   lrs=[float(v) for v in args.lrs.split(",")],
                                   baselines=[] if args.baselines == "none"
                                   else args.baselines.split(","), l2_row=args.l2_row,
                                   log=lambda s: print(s, flush=True)))
    print()
    print(markdown(results))
    from ..io import atomic_write_text
    out = args.work / "features_quality.json"
    # keep other datasets' results from earlier runs (one run per dataset is the usual way)
    done = {r["dataset"] for r in results}
    old = json.loads(out.read_text()) if out.is_file() else []
    merged = [r for r in old if r.get("dataset") not in done] + results
    atomic_write_text(out, json.dumps(merged, indent=2, default=str))
    print(f"\nwrote {args.work / 'features_quality.json'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
