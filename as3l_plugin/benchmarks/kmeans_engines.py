"""K-means engines side by side: ours (:func:`as3l_plugin.clustering.kmeans`, CPU) against
``faiss.Kmeans`` and scikit-learn's ``KMeans``, and the distance product against plain GEMMs.

Run::

    python -m as3l_plugin.benchmarks.kmeans_engines                        # 50,000 x 512, K=100
    python -m as3l_plugin.benchmarks.kmeans_engines --sizes 1000000x128x100,1000000x512x100
    python -m as3l_plugin.benchmarks.kmeans_engines --threads 1,2 --rounds 5 --iters 20

Sizes are ``n x d x K``. Data: the Gaussian mixture of
:func:`as3l_plugin.benchmarks.offline_speed.make_gmm` (10 classes, overlapping), float32.

Engines, each a full Lloyd run from the **same initial centres** (ours' greedy k-means++ on
its default subsample, computed once per size and *not* timed; its time is printed apart)
for exactly ``--iters`` centre updates, tolerances off:

- ``ours``: ``clustering.kmeans(X, K, init=C0, max_iter=iters, tol=0, inertia_tol=0,
  backend='torch', fit_rows=None)`` (every row in every iteration, as the peers below) (it still stops early if the labels stop changing; the iterations it
  ran are printed and the per-iteration figure divides by them);
- ``faiss``: ``faiss.Kmeans(d, K, niter=iters, max_points_per_centroid=n)`` (all points, no
  subsampling) ``.train(X, init_centroids=C0)``; skipped when faiss is not installed;
- ``sklearn``: ``KMeans(K, init=C0, n_init=1, max_iter=iters, tol=0, algorithm='lloyd')``.

Distance product (one pass over ``X`` in ours' row chunks, ``2 n d K`` flops):

- ``torch mm``: the plain product ``torch.mm(X_chunk, C.T, out=buf)``, the reference of the
  percentages (this CPU's GEMM throughput at this shape, through torch);
- ``torch addmm``: what :func:`as3l_plugin.clustering._assign_runs` runs per chunk,
  ``torch.addmm(|c|^2, X_chunk, C.T, alpha=-2, out=buf)``;
- ``numpy X @ C.T``: plain numpy (its BLAS) on the transposed view of ``C``;
- ``numpy X @ Ct``: numpy with a pre-transposed C-contiguous ``Ct`` (d, K).

All engines and products of a size run interleaved: ``--rounds`` rounds, each running every
item once in a rotating order after one warm-up, so load from other processes falls on all
alike. Reported: median wall and CPU seconds, seconds per Lloyd iteration, the median over
rounds of the within-round ratio item / ours (``> 1``: slower than ours), and GFLOP/s of the
products and of each engine's iteration (``2 n d K`` flops) with their percentage of the
plain chunked ``torch mm`` (``torch.mm(X_chunk, C.T)``) measured in the same run; ratios and
GFLOP/s come from the wall clock, or with ``--clock cpu`` from process CPU seconds (all
threads: at one thread the steadier figure on a loaded machine). ``--json PATH`` also
writes the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import numpy as np

ENGINES = ("ours", "faiss", "sklearn")
PRODUCTS = ("torch mm", "torch addmm", "numpy X @ C.T", "numpy X @ Ct")


def parse_sizes(text):
    """``'50000x512x100,1000x16x5'`` -> [(50000, 512, 100), (1000, 16, 5)]."""
    out = []
    for part in text.split(","):
        try:
            n, d, k = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {part!r} is not NxDxK") from None
        if min(n, d, k) < 1 or k > n:
            raise argparse.ArgumentTypeError(f"size {part!r}: need n, d, K >= 1 and K <= n")
        out.append((n, d, k))
    return out


@contextlib.contextmanager
def _threads(threads):
    """torch, faiss (OpenMP) and BLAS thread counts set to ``threads``, restored after."""
    import torch
    from threadpoolctl import threadpool_limits
    faiss = None
    try:
        import faiss
    except ImportError:
        pass
    before = torch.get_num_threads(), faiss and faiss.omp_get_max_threads()
    torch.set_num_threads(threads)
    if faiss is not None:
        faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before[0])
        if faiss is not None:
            faiss.omp_set_num_threads(before[1])


def _have_faiss():
    try:
        import faiss  # noqa: F401
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------- the items
def make_engines(X, C0, iters):
    """{name: callable() -> iterations run} for every engine available."""
    from ..clustering import kmeans

    n, d = X.shape
    K = C0.shape[0]

    def ours():
        return kmeans(X, K, init=C0, max_iter=iters, tol=0.0, inertia_tol=0.0,
                      backend="torch", fit_rows=None).n_iter

    def sk():
        from sklearn.cluster import KMeans
        km = KMeans(n_clusters=K, init=C0, n_init=1, max_iter=iters, tol=0.0,
                    algorithm="lloyd").fit(X)
        return int(km.n_iter_)

    out = {"ours": ours}
    if _have_faiss():
        import faiss

        def fa():
            km = faiss.Kmeans(d, K, niter=iters, max_points_per_centroid=n, seed=1,
                              verbose=False)
            km.train(X, init_centroids=C0)
            return iters
        out["faiss"] = fa
    out["sklearn"] = sk
    return out


def make_products(X, C0):
    """{name: callable()} for one pass of the distance product over ``X`` in ours' chunks."""
    import torch

    from ..clustering import _chunk_rows, _sqnorms

    n = X.shape[0]
    K = C0.shape[0]
    step = _chunk_rows(n, K)
    csq = _sqnorms(C0)
    Ct = np.ascontiguousarray(C0.T)
    buf = np.empty((min(n, step), K), dtype=np.float32)
    C_t, csq_t, buf_t = torch.from_numpy(C0), torch.from_numpy(csq), torch.from_numpy(buf)

    def t_mm():
        for s in range(0, n, step):
            e = min(n, s + step)
            torch.mm(torch.from_numpy(X[s:e]), C_t.T, out=buf_t[:e - s])

    def t_addmm():
        for s in range(0, n, step):
            e = min(n, s + step)
            torch.addmm(csq_t[None, :], torch.from_numpy(X[s:e]), C_t.T, alpha=-2.0,
                        out=buf_t[:e - s])

    def np_view():
        for s in range(0, n, step):
            e = min(n, s + step)
            np.matmul(X[s:e], C0.T, out=buf[:e - s])

    def np_contig():
        for s in range(0, n, step):
            e = min(n, s + step)
            np.matmul(X[s:e], Ct, out=buf[:e - s])

    return dict(zip(PRODUCTS, (t_mm, t_addmm, np_view, np_contig)))


def interleaved(items, *, rounds, ref, clock="wall"):
    """Median wall and CPU seconds of every item, and the median within-round ratio
    item / ``ref`` of the ``clock`` time (``'wall'`` or ``'cpu'``: process CPU seconds, all
    threads, the steadier figure on a loaded machine)."""
    names = list(items)
    for fn in items.values():  # warm-up: lazily loaded kernels, thread pools
        fn()
    walls = {k: [] for k in names}
    cpus = {k: [] for k in names}
    extra = {}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            c, t = time.process_time(), time.perf_counter()
            res = items[k]()
            walls[k].append(time.perf_counter() - t)
            cpus[k].append(time.process_time() - c)
            extra[k] = res
    use = walls if clock == "wall" else cpus
    out = {}
    for k in names:
        ratios = [w / max(b, 1e-12) for w, b in zip(use[k], use[ref])]
        out[k] = {"wall_s": statistics.median(walls[k]), "cpu_s": statistics.median(cpus[k]),
                  "ratio": statistics.median(ratios), "result": extra[k]}
        out[k]["time_s"] = out[k]["wall_s" if clock == "wall" else "cpu_s"]
    return out


def run_size(n, d, K, *, threads, rounds, iters, clock="wall", seed=0):
    from ..clustering import kmeans_plusplus
    from .offline_speed import make_gmm

    X, _ = make_gmm(n=n, dim=d, seed=seed)
    t = time.perf_counter()
    C0 = kmeans_plusplus(X, K, seed=seed)
    t_init = time.perf_counter() - t
    flops = 2.0 * n * d * K
    with _threads(threads):
        eng = interleaved(make_engines(X, C0, iters), rounds=rounds, ref="ours", clock=clock)
        prod = interleaved(make_products(X, C0), rounds=rounds, ref="torch mm", clock=clock)
    for v in eng.values():
        v["iters"] = int(v.pop("result"))
        v["s_per_iter"] = max(v["time_s"], 1e-9) / max(v["iters"], 1)
        v["gflops_per_iter"] = flops / v["s_per_iter"] / 1e9
    base = flops / max(prod["torch mm"]["time_s"], 1e-9) / 1e9
    for v in prod.values():
        v.pop("result")
        v["gflops"] = flops / max(v["time_s"], 1e-9) / 1e9
        v["pct_mm"] = 100.0 * v["gflops"] / base
    for v in eng.values():
        v["pct_mm"] = 100.0 * v["gflops_per_iter"] / base
    return {"n": n, "d": d, "K": K, "threads": threads, "rounds": rounds, "iters": iters,
            "clock": clock, "init_s": t_init, "engines": eng, "products": prod}


def print_size(res):
    n, d, K, clock = res["n"], res["d"], res["K"], res["clock"]
    print(f"\n## {n:,} x {d} float32, K = {K}, {res['threads']} thread(s), "
          f"{res['iters']} Lloyd iterations, {res['rounds']} round(s), ratios and GFLOP/s "
          f"from {clock} time; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"k-means++ init (ours, not timed below): {res['init_s']:.2f} s wall")
    print(f"| engine | iterations | wall s | CPU s | {clock} s / iteration | GFLOP/s "
          f"(2ndK per iteration) | % of torch mm | {clock} time / ours |")
    print("|---|---|---|---|---|---|---|---|")
    for k, v in res["engines"].items():
        print(f"| {k} | {v['iters']} | {v['wall_s']:.4g} | {v['cpu_s']:.4g} | "
              f"{v['s_per_iter']:.4g} | {v['gflops_per_iter']:.3g} | {v['pct_mm']:.0f}% | "
              f"{v['ratio']:.3g} |")
    print(f"| distance product (one pass) | wall s | CPU s | GFLOP/s | % of torch mm | "
          f"{clock} time / torch mm |")
    print("|---|---|---|---|---|---|")
    for k, v in res["products"].items():
        print(f"| {k} | {v['wall_s']:.4g} | {v['cpu_s']:.4g} | {v['gflops']:.3g} | "
              f"{v['pct_mm']:.0f}% | {v['ratio']:.3g} |")
    ours = res["engines"]["ours"]
    print(f"ours: {ours['pct_mm']:.0f}% of the torch mm throughput per Lloyd iteration "
          f"(goal >= 70%)" + "".join(
              f"; {k} / ours = {v['ratio']:.3g}" for k, v in res["engines"].items()
              if k != "ours"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=parse_sizes, default=parse_sizes("50000x512x100"),
                    help="comma-separated NxDxK (default 50000x512x100; the 1M sizes are "
                         "1000000x128x100,1000000x512x100)")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20, help="Lloyd iterations per engine run")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time behind the ratios and GFLOP/s (cpu: process CPU seconds, "
                         "steadier on a loaded machine)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.rounds < 1 or args.iters < 1 or min(threads) < 1:
        ap.error("--rounds, --iters and --threads must be >= 1")
    if not _have_faiss():
        print("faiss is not installed: the faiss engine is skipped")
    results = []
    for n, d, K in args.sizes:
        for th in threads:
            res = run_size(n, d, K, threads=th, rounds=args.rounds, iters=args.iters,
                           clock=args.clock)
            print_size(res)
            results.append(res)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
