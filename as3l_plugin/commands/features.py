"""``as3l pretrain``, ``as3l features``, ``as3l finetune``, ``as3l linear-eval``: the feature stage.

Workflow::

    as3l pretrain --dataset fashion_mnist --net cnn4 --out runs/fm        # -> backbone.pth
    as3l features --checkpoint runs/fm/backbone.pth --out f_self.npy      # train split
    as3l finetune --features f_self.npy --out f_fine.npy                  # Eq. 1
    as3l linear-eval --features f_self.npy --checkpoint runs/fm/backbone.pth

Only argparse and the standard library are imported here; torch, numpy and scikit-learn are
imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _threads(n):
    if n:
        import torch
        torch.set_num_threads(int(n))


def load_dataset_args(args, name, defaults=None):
    """``load_dataset`` with the command's dataset options (``--img-size``, ``--channels``,
    ``--skip-bad-images``); unset ones from ``defaults`` (a checkpoint's meta)."""
    from ..datasets import dataset_options, load_dataset
    opts = dataset_options(args)
    for key, meta_key in (("img_size", "image_size"), ("channels", "in_channels")):
        if opts[key] is None and defaults and defaults.get(meta_key) is not None:
            opts[key] = int(defaults[meta_key])
    return load_dataset(name, args.data_dir, progress=not getattr(args, "quiet", False), **opts)


def _dataset_or_name(args):
    """The loaded dataset for folder / arrays (they need their options), else its name."""
    from ..datasets import USER_LOADERS
    return load_dataset_args(args, args.dataset) if args.dataset in USER_LOADERS else args.dataset


# --------------------------------------------------------------------------- pretrain
def cmd_pretrain(args) -> int:
    from ..features.pretrain import pretrain_simsiam
    from ..validate import check_device
    check_device(args.device)  # before the dataset is loaded
    path = pretrain_simsiam(_dataset_or_name(args), args.net, out=args.out, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
                            objective=args.objective, cpu_bf16=args.cpu_bf16, amp=args.amp,
                            seed=args.seed, device=args.device, data_dir=args.data_dir,
                            num_threads=args.workers, progress=not args.quiet)
    print(f"wrote {path}  (USB: use_pretrain: True, pretrain_path: {path})")
    return 0


# --------------------------------------------------------------------------- features
def cmd_features(args) -> int:
    from ..features.backbone import load_backbone
    from ..features.extract import extract_features, features_sidecar
    from ..io import write_with_sidecar
    from ..validate import check_device
    check_device(args.device)  # before the checkpoint and the dataset are loaded
    _threads(args.workers)
    _, meta = load_backbone(args.checkpoint)
    name = args.dataset or meta.get("dataset")
    ds = load_dataset_args(args, name, meta)
    X = extract_features(args.checkpoint, ds, split=args.split, batch_size=args.batch_size,
                         device=args.device, progress=not args.quiet)
    meta["num_classes"] = ds.num_classes
    meta["dataset_files_sha256"] = ds.files_sha256
    write_with_sidecar(args.out, X, features_sidecar(args.checkpoint, ds.name, args.split, X,
                                                     meta))
    print(f"wrote {args.out}: float32 {X.shape} ({ds.name} {args.split})")
    return 0


# --------------------------------------------------------------------------- finetune
def cmd_finetune(args) -> int:
    from .. import __version__
    from ..errors import ParameterError
    from ..features.finetune import FeatureFinetuner, resolve_k
    from ..io import load_features, read_sidecar, sha256_array, write_with_sidecar
    _threads(args.workers)
    X = load_features(args.features)
    side = read_sidecar(args.features, required=False) or {}
    K = resolve_k(args.k, args.budget, side.get("num_classes"))
    ft = FeatureFinetuner(n_clusters=K, n_runs=args.runs, epochs=args.epochs, lr=args.lr,
                          normalize=not args.no_normalize, seed=args.seed, device=args.device,
                          progress=not args.quiet)
    Xf = ft.fit_transform(X)
    meta = {"kind": "features", "stage": "f_fine", "source": str(args.features),
            "source_sha256": sha256_array(X), "dataset": side.get("dataset"),
            "split": side.get("split"), "num_classes": side.get("num_classes"),
            "n": int(Xf.shape[0]), "dim": int(Xf.shape[1]), "k": K, "runs": args.runs,
            "epochs": args.epochs, "lr": args.lr, "normalize": not args.no_normalize,
            "seed": args.seed, "loss_before": float(ft.loss_history_[0]),
            "loss_after": float(ft.loss_history_[-1]), "features_sha256": sha256_array(Xf),
            "version": __version__}
    if side.get("dataset_files_sha256"):
        meta["dataset_files_sha256"] = side["dataset_files_sha256"]
    if (args.test_features is None) != (args.test_out is None):
        raise ParameterError("give both --test-features and --test-out, or neither",
                             field="--test-out")
    write_with_sidecar(args.out, Xf, meta)
    print(f"wrote {args.out}: float32 {Xf.shape}; Eq. 1 loss {ft.loss_history_[0]:.4f} -> "
          f"{ft.loss_history_[-1]:.4f} (K={K}, C={args.runs})")
    if args.test_features is not None:
        Xt = load_features(args.test_features)
        if Xt.shape[1] != X.shape[1]:
            raise ParameterError(f"has {Xt.shape[1]} columns, {args.features} has "
                                 f"{X.shape[1]}", field="--test-features")
        Xtf = ft.transform(Xt)
        side_t = read_sidecar(args.test_features, required=False) or {}
        write_with_sidecar(args.test_out, Xtf, dict(meta, source=str(args.test_features),
                                                    source_sha256=sha256_array(Xt),
                                                    split=side_t.get("split"),
                                                    n=int(Xtf.shape[0]),
                                                    features_sha256=sha256_array(Xtf)))
        print(f"wrote {args.test_out}: float32 {Xtf.shape} (same layer)")
    return 0


# --------------------------------------------------------------------------- linear-eval
def cmd_linear_eval(args) -> int:
    import json

    from ..errors import InputError, ParameterError
    from ..features.evaluate import linear_eval
    from ..io import atomic_write_json, load_features, read_sidecar
    _threads(args.workers)
    X = load_features(args.features)
    name = args.dataset or (read_sidecar(args.features, required=False) or {}).get("dataset")
    if not name:
        raise ParameterError("cannot tell the dataset (no sidecar); pass --dataset",
                             field="--dataset")
    ckpt_meta = None
    if args.checkpoint is not None:  # a folder's img_size / channels default to the backbone's
        from ..features.backbone import load_backbone
        ckpt_meta = load_backbone(args.checkpoint)[1]
    ds = load_dataset_args(args, name, ckpt_meta)
    if X.shape[0] != len(ds.y_train):
        raise InputError(f"has {X.shape[0]} rows, the {ds.name} training split has "
                         f"{len(ds.y_train)}", path=args.features)
    if args.test_features is not None:
        Xt = load_features(args.test_features)
    elif args.checkpoint is not None:
        from ..features.extract import extract_features
        Xt = extract_features(args.checkpoint, ds, split="test", progress=not args.quiet)
    else:
        raise ParameterError("needs test features: pass --test-features F_TEST.npy (made by "
                             "`as3l features --split test`) or --checkpoint CKPT to extract "
                             "them", field="--test-features")
    if Xt.shape[0] != len(ds.y_test):
        raise InputError(f"has {Xt.shape[0]} rows, the {ds.name} test split has "
                         f"{len(ds.y_test)}", path=args.test_features or args.checkpoint)
    res = linear_eval(X, ds.y_train, Xt, ds.y_test, num_classes=ds.num_classes,
                      seed=args.seed)
    print(f"{ds.name}  n_train={res.n_train} n_test={res.n_test} dim={res.dim}\n"
          f"  linear-probe test accuracy  {100 * res.linear_acc:6.2f}%\n"
          f"  kNN (k=20) test accuracy    {100 * res.knn_acc:6.2f}%\n"
          f"  K-means purity (K={ds.num_classes})     {100 * res.kmeans_purity:6.2f}%")
    if args.json:
        atomic_write_json(args.json, dict(res.as_dict(), dataset=ds.name,
                                          features=str(args.features)))
    return 0


# --------------------------------------------------------------------------- parser
def add_dataset_args(p, *, img_size_help: str = "folder: resize images to S x S (required; "
                                               "README 'Your own images')") -> None:
    """``--data-dir`` and the options of ``dataset folder`` / ``arrays``."""
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="dataset files; folder: the image folder (PATH/train/...), arrays: the "
                        ".npz")
    p.add_argument("--img-size", dest="img_size", type=int, default=None, metavar="S",
                   help=img_size_help)
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="folder: convert every image to 1 (grayscale) or 3 (RGB) channels "
                        "(default: detected)")
    p.add_argument("--skip-bad-images", dest="skip_bad_images", action="store_true",
                   help="folder: list and skip unreadable images instead of stopping")


def _common(p, *, device=True):
    if device:
        p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's choice; use 1 on a "
                        "machine shared with other jobs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of the SSL backbone -> backbone.pth",
        description="Pretrain the backbone the SSL stage trains (SimSiam, SimCLR or "
                    "VICReg). Writes "
                    "OUT/checkpoint.pth every epoch (re-running the same command resumes) and "
                    "OUT/backbone.pth at the end (USB: use_pretrain: True, pretrain_path: "
                    "OUT/backbone.pth). Unset options take per-dataset defaults "
                    "(README, section 'Feature stage').")
    p.add_argument("--dataset", required=True,
                   help="digits, fashion_mnist, cifar10, ..., folder (your images: --data-dir "
                        "PATH --img-size S), arrays (--data-dir FILE.npz)")
    p.add_argument("--net", default="cnn4",
                   help="backbone: cnn4 (grayscale), cnn4_rgb, or a semilearn.nets name "
                        "(wrn_28_2, wrn_28_8, wrn_var_37_2, ...); default cnn4")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None,
                   help="base learning rate; the run uses lr * batch_size / 256")
    p.add_argument("--image-size", dest="image_size", type=int, default=None,
                   help="side of the augmented views (smaller = faster); features are "
                        "always extracted at the dataset's size")
    p.add_argument("--objective", choices=("simsiam", "simclr", "vicreg"), default=None,
                   help="self-supervised objective (default: the dataset's, see README)")
    p.add_argument("--cpu-bf16", dest="cpu_bf16", choices=("auto", "true", "false"),
                   default="auto", help="bfloat16 autocast on CPU (auto: where the CPU has "
                                        "native bf16)")
    p.add_argument("--amp", action="store_true",
                   help="CUDA only: float16 autocast with a gradient scaler (USB's amp)")
    p.add_argument("--seed", type=int, default=0)
    add_dataset_args(p)
    _common(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("features", help="backbone features of a dataset split -> f_self.npy",
                       description="Extract float32 (n, F) features in dataset order (eval "
                                   "mode, deterministic) with a JSON sidecar.")
    p.add_argument("--checkpoint", required=True, type=Path, help="backbone.pth or its dir")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's dataset")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=512)
    add_dataset_args(p)
    _common(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("finetune", help="Eq. 1 multi-K-means fine-tuning -> f_fine.npy",
                       description="Train a linear layer (identity-initialised) on frozen "
                                   "features towards the centres of C K-means runs (AS3L "
                                   "Eq. 1). K: --k, else --budget, else the dataset's number "
                                   "of classes from the features' sidecar, else 10.")
    p.add_argument("--features", required=True, type=Path, help="f_self.npy")
    p.add_argument("--out", required=True, type=Path, help="f_fine.npy")
    p.add_argument("--k", type=int, default=None, help="clusters per K-means run")
    p.add_argument("--budget", type=int, default=None,
                   help="labeling budget; sets K = budget (the paper's rule) unless --k")
    p.add_argument("--runs", type=int, default=6, help="C, K-means runs (default 6)")
    p.add_argument("--epochs", type=int, default=40, help="default 40 (paper)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--no-normalize", dest="no_normalize", action="store_true",
                   help="do not L2-normalise f_self rows first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-features", dest="test_features", type=Path, default=None,
                   help="also map these features (e.g. the test split) with the same layer")
    p.add_argument("--test-out", dest="test_out", type=Path, default=None)
    _common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("linear-eval", help="linear probe, kNN and K-means purity of features",
                       description="Logistic regression on all training labels -> test "
                                   "accuracy; cosine kNN (k=20) accuracy; K-means purity "
                                   "(K = number of classes) on the training features.")
    p.add_argument("--features", required=True, type=Path, help="training-split features")
    p.add_argument("--dataset", default=None, help="default: from the features' sidecar")
    p.add_argument("--test-features", dest="test_features", type=Path, default=None)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="extract the test features from this backbone.pth instead")
    add_dataset_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    _common(p, device=False)
    p.set_defaults(func=cmd_linear_eval)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: as3l <command>")
