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
   (default: K = budget = number of classes, the paper's rule, and 5 x budget);
3. all labels: linear-probe and cosine-kNN test accuracy, K-means purity (K = classes);
4. AS3L at 1 label per class, for ``--seeds`` seeds: ``as3l`` selection, ``seeded_kmeans``
   prior from the true labels of the selected samples, prior accuracy on the other training
   samples, and class coverage of the selection. ``f_fine`` is refitted per seed (fine-tuning
   seed = selection seed), so its spread includes fine-tuning's own randomness.

Prints a Markdown table (mean ± std over seeds) and writes ``WORK/features_quality.json``.
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


def _prior(X, y, num_classes, seed):
    from ..metrics import class_coverage, prior_accuracy
    from ..propagation import get_propagator
    from ..selection import get_sampler
    idx = get_sampler("as3l").select(X, num_classes, seed=seed)
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


def run_dataset(name, *, checkpoint, work: Path, seeds, ks, threads, log=print):
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

    sets = {"raw": (ds.x_train.reshape(len(ds.y_train), -1).astype(np.float32) / 255,
                    ds.x_test.reshape(len(ds.y_test), -1).astype(np.float32) / 255)}
    for tag, ck in (("random", rand), ("f_self", checkpoint)):
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

    for tag, (tr, te) in sets.items():
        evaluate(tag, tr, te, lambda s, X=tr: _prior(X, ds.y_train, C, s))
    f_self, f_self_test = sets["f_self"]
    for K in ks:
        fits = {}

        def fine(s, K=K):
            if s not in fits:
                fits[s] = FeatureFinetuner(n_clusters=K, seed=s, progress=False).fit(f_self)
            return fits[s]

        t = time.perf_counter()
        ft0 = fine(seeds[0])
        timings[f"finetune_K{K}_s"] = time.perf_counter() - t
        evaluate(f"f_fine K={K}", ft0.transform(f_self), ft0.transform(f_self_test),
                 lambda s: _prior(fine(s).transform(f_self), ds.y_train, C, s))
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
                                   log=lambda s: print(s, flush=True)))
    print()
    print(markdown(results))
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "features_quality.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {args.work / 'features_quality.json'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
