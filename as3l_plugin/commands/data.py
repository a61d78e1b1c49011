"""``as3l export-folder``: write a dataset as an image folder (``dataset: folder`` layout).

Workflow::

    as3l export-folder fashion_mnist data/fm2k --n 2000
    as3l pretrain --dataset folder --data-dir data/fm2k --img-size 28 --out runs/fm2k

Only argparse is imported here; the command imports numpy / Pillow when it runs.
"""

from __future__ import annotations

from pathlib import Path


def cmd_export_folder(args) -> int:
    from ..datasets import load_dataset
    from ..errors import ParameterError
    from ..user_datasets import export_folder
    for flag, v in (("--n", args.n), ("--n-test", args.n_test)):
        if v is not None and v < 1:
            raise ParameterError(f"={v} must be >= 1", field=flag)
    ds = load_dataset(args.dataset, args.data_dir)
    info = export_folder(ds, args.out, n=args.n, n_test=args.n_test, progress=not args.quiet)
    print(f"wrote {args.out}: {info['train']} train + {info['test']} test PNGs "
          f"({ds.image_size}x{ds.image_size}, {ds.in_channels} channel(s)) in "
          f"{len(info['classes'])} class folders, classes.txt")
    print(f"use it: --dataset folder --data-dir {args.out} --img-size {ds.image_size}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export-folder", help="write a dataset as PNGs in the folder layout (train/, test/)",
        description="Write DIR/train/<class>/<row>.png (the first --n train rows), "
                    "DIR/test/<class>/<row>.png (the first --n-test test rows, default --n) and "
                    "DIR/classes.txt: the layout `dataset: folder` reads. Row numbers are "
                    "zero-padded, so sorted paths keep the dataset order within a class. DIR "
                    "must not exist or be empty; it appears complete or not at all.")
    p.add_argument("dataset", help="digits, fashion_mnist (or any loadable dataset)")
    p.add_argument("out", type=Path, metavar="DIR")
    p.add_argument("--n", type=int, default=None, help="train rows (default: all)")
    p.add_argument("--n-test", dest="n_test", type=int, default=None,
                   help="test rows (default: --n, all when --n is unset)")
    p.add_argument("--data-dir", dest="data_dir", default=None,
                   help="where the source dataset's files are (default: its usual place)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export_folder)
