"""How fast a ``dataset: folder`` loads: the first load (decode + cache write) and the cached
loads after it.

Run::

    python -m as3l_plugin.benchmarks.folder_cache                         # 100,000 x 64x64
    python -m as3l_plugin.benchmarks.folder_cache --n 20000 --size 32 --dir /tmp/f20k

Writes ``--n`` grayscale PNGs of ``--size`` x ``--size`` (blocky random images, 10 class
folders of ``train/``) into ``--dir`` unless it already holds them, then times
:func:`as3l_plugin.datasets.load_dataset` ``('folder', dir, img_size=size)``: once cold (no
cache: every image decoded, the cache written), then ``--repeats`` times from the cache, each
in a fresh subprocess (so the figure includes listing and stat-ing every file, reading the
cache, and nothing kept in memory between loads; the page cache is warm after the first).
Python start-up and imports are not timed. Prints one JSON line per measurement and a
summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed)
    block = max(1, size // 8)
    for i in range(n):
        d = root / "train" / f"c{i % 10}"
        if i < 10:
            d.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size // block, size // block), dtype=np.uint8)
        img = np.kron(small, np.ones((block, block), np.uint8))
        Image.fromarray(img, mode="L").save(d / f"{i:07d}.png")


def _time_load(root: str, size: int) -> dict:
    from as3l_plugin.datasets import load_dataset
    t0 = time.perf_counter()
    ds = load_dataset("folder", root, img_size=size, progress=False)
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 3), "shape": list(ds.x_train.shape),
            "bytes": int(ds.x_train.nbytes)}


def _child(root: str, size: int) -> dict:
    code = ("import json,sys; from as3l_plugin.benchmarks.folder_cache import _time_load; "
            f"print(json.dumps(_time_load({root!r}, {size})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/as3l_folder_cache_bench"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fresh-cache", action="store_true",
                    help="delete the cache first (time the cold load again)")
    args = ap.parse_args(argv)
    root = args.dir
    have = len(list((root / "train").rglob("*.png"))) if (root / "train").is_dir() else 0
    if have != args.n:
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        make_folder(root, args.n, args.size)
        print(json.dumps({"step": "write_pngs", "n": args.n,
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    cache = root / ".as3l-cache"
    if args.fresh_cache or not cache.is_dir():
        shutil.rmtree(cache, ignore_errors=True)
        cold = _child(str(root), args.size)
        print(json.dumps({"step": "cold_load", **cold}), flush=True)
    warm = []
    for _ in range(args.repeats):
        r = _child(str(root), args.size)
        warm.append(r["seconds"])
        print(json.dumps({"step": "cached_load", **r}), flush=True)
    print(f"folder of {args.n} x {args.size}x{args.size} PNGs: cached load "
          f"median {float(np.median(warm)):.2f} s (min {min(warm):.2f} s, {args.repeats} "
          "fresh processes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
