"""The offline stage at scale: 1M and 10M rows, wall time, CPU time and peak memory.

Run::

    python -m as3l_plugin.benchmarks.scale --n 1000000 --dim 128          # in memory
    python -m as3l_plugin.benchmarks.scale --n 1000000 --dim 512
    python -m as3l_plugin.benchmarks.scale --n 10000000 --dim 128 --mmap  # 5 GB, from disk

Data: the Gaussian mixture of :func:`as3l_plugin.benchmarks.offline_speed.make_gmm` (10
classes, overlapping, float32), written block by block into ``--work``/``gmm_{n}x{d}.npy``
(kept and reused; labels beside it), so that making it never holds more than one block.

Steps, each in a fresh process (imports and a warm-up on 2,000 rows before the clock):

- ``as3l:B``: ``get_sampler('as3l').select(X, B, seed)``;
- ``prior``: ``get_propagator('seeded_kmeans').propagate(X, idx, y[idx], 10, seed)`` with the
  default K list, on the labels of the ``as3l:B`` selection of the smallest B run (or a
  stratified random set when none ran);
- ``typiclust:B``: ``get_sampler('typiclust').select(X, B, seed)``.

Features are ``np.load``-ed whole, or with ``--mmap`` opened as a read-only memmap (read in row
chunks; resident pages count in the RSS as they are touched). Reported per step: wall and CPU
seconds (all threads) and the **peak extra memory**: the process's peak RSS (``VmHWM``, reset
through ``/proc/self/clear_refs`` after the warm-up) minus its RSS before the features were
loaded, so it *includes* the feature matrix (for a memmap, the pages read); the goal is
``<= 1.25 x`` the features' bytes. ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .offline_speed import _cpu, _reset_peak, _status

BLOCK = 1 << 18  # rows generated per block


def gmm_file(work, n, dim, seed=0, n_classes=10, spread=0.35):
    """Write (once) the mixture ``(n, dim)`` float32 and its int64 labels as ``.npy``
    files in ``work``, block by block; returns their paths."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    fx, fy = work / f"gmm_{n}x{dim}_s{seed}.npy", work / f"gmm_{n}x{dim}_s{seed}_y.npy"
    if fx.exists() and fy.exists():
        return fx, fy
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=spread, size=(n_classes, dim)).astype(np.float32)
    y = rng.integers(n_classes, size=n).astype(np.int64)
    tmp = fx.with_suffix(".tmp.npy")
    X = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    for s in range(0, n, BLOCK):
        e = min(n, s + BLOCK)
        block = rng.standard_normal(size=(e - s, dim), dtype=np.float32)
        block += centers[y[s:e]]
        X[s:e] = block
    X.flush()
    del X
    np.save(fy, y)
    os.replace(tmp, fx)
    return fx, fy


def _stratified(y, per_class, seed):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                           for c in np.unique(y)]).astype(np.int64)


def _worker(args):
    import warnings
    warnings.simplefilter("ignore")
    import torch  # noqa: F401  (the clustering backend, imported before the clock)

    from ..propagation import get_propagator
    from ..selection import get_sampler

    kind, _, b = args.worker.partition(":")
    Xw = np.load(args.features, mmap_mode="r")[:2000].astype(np.float32)
    get_sampler("as3l").select(Xw, 10, seed=0)
    get_propagator("seeded_kmeans").propagate(Xw, np.arange(10), np.arange(10) % 10, 10)
    del Xw
    reset = _reset_peak()
    base = _status("VmRSS")
    t0, c0 = time.perf_counter(), _cpu()
    X = np.load(args.features, mmap_mode="r" if args.mmap else None)
    y = np.load(args.labels)
    if kind == "prior":
        idx = (np.load(args.idx) if args.idx else _stratified(y, 1, args.seed))
        P = get_propagator("seeded_kmeans").propagate(X, idx, y[idx], int(y.max()) + 1,
                                                      seed=args.seed)
        mask = np.ones(len(y), dtype=bool)
        mask[idx] = False
        extra = {"prior_acc": float((P.argmax(1)[mask] == y[mask]).mean()),
                 "labeled": int(idx.size)}
        del P
    else:
        idx = get_sampler(kind).select(X, int(b), seed=args.seed)
        extra = {"coverage": int(np.unique(y[idx]).size)}
        if args.save_idx:
            np.save(args.save_idx, idx)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    peak = _status("VmHWM") if reset else None
    print(json.dumps({"step": args.worker, "wall_s": wall, "cpu_s": cpu,
                      "features_bytes": int(X.nbytes), "mmap": bool(args.mmap),
                      "threads": torch.get_num_threads(),
                      "peak_extra_bytes": None if peak is None or base is None else peak - base,
                      **extra}))
    return 0


def _spawn(step, fx, fy, args, idx=None, save_idx=None):
    cmd = [sys.executable, "-m", "as3l_plugin.benchmarks.scale", "--worker", step,
           "--features", str(fx), "--labels", str(fy), "--seed", str(args.seed)]
    if args.mmap:
        cmd.append("--mmap")
    if idx:
        cmd += ["--idx", str(idx)]
    if save_idx:
        cmd += ["--save-idx", str(save_idx)]
    # the child's stderr (progress bars) goes to the terminal; its last stdout line is JSON
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m as3l_plugin.benchmarks.scale",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=128, help="feature dimension (default 128)")
    ap.add_argument("--steps", nargs="+", default=["as3l:100", "prior", "as3l:1000",
                                                   "typiclust:100"],
                    help="as3l:B, prior, typiclust:B (default: as3l:100 prior as3l:1000 "
                         "typiclust:100)")
    ap.add_argument("--mmap", action="store_true", help="read the features as a memmap")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="results/scale", help="where the data files go")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--features", help=argparse.SUPPRESS)
    ap.add_argument("--labels", help=argparse.SUPPRESS)
    ap.add_argument("--idx", help=argparse.SUPPRESS)
    ap.add_argument("--save-idx", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args)
    for st in args.steps:
        kind, _, b = st.partition(":")
        if not ((kind in ("as3l", "typiclust") and b.isdigit()) or st == "prior"):
            ap.error(f"--steps: {st!r} is not as3l:B, typiclust:B or prior")
    t = time.perf_counter()
    fx, fy = gmm_file(args.work, args.n, args.dim, args.seed)
    print(f"data: {fx} ({args.n:,} x {args.dim} float32, "
          f"{fx.stat().st_size / 2**30:.2f} GiB; {time.perf_counter() - t:.0f} s to make or "
          f"find); {'memmap' if args.mmap else 'loaded in memory'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    budgets = sorted(int(s.partition(":")[2]) for s in args.steps if s.startswith("as3l:"))
    idx_file = (Path(args.work) / f"idx_{args.n}x{args.dim}_s{args.seed}_b{budgets[0]}.npy"
                if budgets else None)
    rows = []
    print("| step | wall s | CPU s | threads | peak extra memory | / features | note |")
    print("|---|---|---|---|---|---|---|")
    for st in args.steps:
        save = idx_file if budgets and st == f"as3l:{budgets[0]}" else None
        use = idx_file if st == "prior" and idx_file and idx_file.exists() else None
        r = _spawn(st, fx, fy, args, idx=use, save_idx=save)
        rows.append(r)
        pe = r["peak_extra_bytes"]
        note = (f"prior acc {100 * r['prior_acc']:.1f}% ({r['labeled']} labels)"
                if "prior_acc" in r else f"{r['coverage']} classes covered")
        mem = "n/a" if pe is None else f"{pe / 2**20:,.0f} MB"
        rel = "n/a" if pe is None else f"{pe / r['features_bytes']:.2f}"
        print(f"| {st} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['threads']} | {mem} | "
              f"{rel} | {note} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"n": args.n, "dim": args.dim,
                                               "mmap": args.mmap, "steps": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
