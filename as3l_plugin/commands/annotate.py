"""``as3l annotate SELECT_DIR``: label the selection in a browser.

Workflow::

    as3l select --features F.npy --budget 40 --dataset fashion_mnist --out sel/
    as3l annotate sel/            # -> sel/annotate.html, sel/contact_sheet.png: open, label,
                                  #    "Download to_annotate.csv", put it into sel/
    as3l annotate sel/ --serve    # or: served on 127.0.0.1, every click saved to sel/
    as3l prior --features F.npy --select-dir sel/ --num-classes 10 --out prior.npy
"""

from __future__ import annotations

import sys


def _next_command(ann, side) -> str:
    feats = side.get("features_file") or "F.npy"
    return (f"as3l prior --features {feats} --select-dir {ann.dir} --num-classes "
            f"{len(ann.class_names)} --out prior.npy")


#: the size a folder's images are shown at when ``--img-size`` is not given
PAGE_IMG_SIZE = 96


def cmd_annotate(args) -> int:
    from .. import annotate as an
    from ..artifacts import read_artifact_sidecar
    from ..io import find_index

    from ..datasets import USER_LOADERS
    index = args.index or find_index(args.select_dir)
    side = read_artifact_sidecar(index)
    dataset = args.dataset
    if (dataset or side.get("dataset")) in USER_LOADERS:  # folder / arrays: their options
        from .features import load_dataset_args
        name = dataset or side.get("dataset")
        if name == "folder" and args.img_size is None:  # only shown: any size will do
            args.img_size = PAGE_IMG_SIZE
        dataset = load_dataset_args(args, name)
    ann = an.open_selection(args.select_dir, dataset=dataset, data_dir=args.data_dir,
                            index=index)
    sheet = an.write_contact_sheet(ann)
    page = an.write_page(ann)
    print(f"{ann.idx.size} images, {len(ann.class_names)} classes; "
          f"{ann.num_labeled} labeled so far", flush=True)
    print(f"  contact sheet: {sheet}", flush=True)
    if not args.serve:
        print(f"  page: {page}", flush=True)
        print(f"open it in a browser, label every image, press 'Download to_annotate.csv' and "
              f"put the file at {ann.csv} (or run `as3l annotate {ann.dir} --serve` to save "
              "every click there), then run", flush=True)
        print(f"  {_next_command(ann, side)}", flush=True)
        return 0

    def ready(url):
        print(f"serving the page at {url} (127.0.0.1 only); every click is saved to "
              f"{ann.csv}; press Done in the page to stop (Ctrl+C also keeps what is saved)",
              flush=True)
        if args.open:
            import webbrowser
            webbrowser.open(url)

    an.serve(ann, port=args.port, on_ready=ready,
             log=(lambda m: print(m, flush=True)) if args.verbose else (lambda m: None))
    an.write_page(ann)  # the file page shows the final labels too
    print(f"saved {ann.num_labeled} / {ann.idx.size} labels to {ann.csv}", flush=True)
    left = ann.idx.size - ann.num_labeled
    if left:
        print(f"  {left} image(s) still need a class ({ann.num_skipped} marked skip / "
              f"unsure); run `as3l annotate {ann.dir} --serve` again to finish", flush=True)
    else:
        print(f"next: {_next_command(ann, side)}", flush=True)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "annotate", help="label the selection in a browser (annotate.html, or --serve)",
        description="Write SELECT_DIR/annotate.html (every selected image, a class picker by "
                    "name with keys 1-9/0, progress, undo, skip / unsure, a download button "
                    "for to_annotate.csv) and SELECT_DIR/contact_sheet.png. With --serve, "
                    "serve the page on 127.0.0.1 and save to_annotate.csv after every click "
                    "until you press Done.")
    p.add_argument("select_dir", metavar="SELECT_DIR", help="the --out directory of "
                   "`as3l select` (or a run's annotate/ directory)")
    p.add_argument("--dataset", help="dataset of the images (default: the one recorded by "
                   "`as3l select --dataset`)")
    from .features import add_dataset_args
    add_dataset_args(p, img_size_help=f"folder: show images at S x S (default {PAGE_IMG_SIZE})")
    p.add_argument("--index", metavar="lb_..._idx.npy", help="the index file, when SELECT_DIR "
                   "holds several")
    p.add_argument("--serve", action="store_true",
                   help="serve the page on 127.0.0.1 and save every click")
    p.add_argument("--port", type=int, default=0, help="port for --serve (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.add_argument("--verbose", "-v", action="store_true", help="print every label received")
    p.set_defaults(func=cmd_annotate)


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main
    sys.exit(main(sys.argv[1:]))
