"""CPU training-step speed: bfloat16 autocast, channels-last and ``torch.compile``, against
the previous defaults, for the two steps that take the time.

Run::

    python -m as3l_plugin.benchmarks.cpu_step_speed                  # 1 thread
    python -m as3l_plugin.benchmarks.cpu_step_speed --threads 1,2 --rounds 10

Steps (Fashion-MNIST, net ``cnn4``):

``pretrain``
    one self-supervised step of :class:`~as3l_plugin.features.pretrain.SimSiamPretrainer`
    at its Fashion-MNIST defaults (SimSiam, views of 16 px, batch 256 pairs): batched
    augmentation of two views, forward, loss, backward, SGD.
``usb``
    one USB FlexMatch iteration through the plugin's entry (the shipped Fashion-MNIST
    config, batch 16, μ 3): batch fetch, ``train_step``, backward, SGD, EMA.

Variants (each a full step; the first of each list is the **peer**: the defaults before the
``cpu_bf16`` switch existed):

- ``pretrain``: ``fp32_cl`` (fp32, channels-last: the old default), ``fp32``
  (contiguous), ``bf16`` (autocast, contiguous), ``bf16_cl`` (the new default), and
  ``bf16_cl_compile`` (``torch.compile`` on top; compile time reported apart);
- ``usb``: ``fp32`` (the old default), ``fp32_cl``, ``bf16``, ``bf16_cl`` (the new default).

Variants run interleaved: ``--rounds`` rounds, each running every variant for ``--steps``
steps in a rotating order after a warm-up, so load from other processes falls on all of them
alike. Reported per variant: median wall seconds per step and process CPU seconds per step,
and the median over rounds of the within-round ratio peer / variant. For the new default
the achieved GFLOP/s (convolution and matmul FLOPs of one step, counted by
``torch.utils.flop_counter``, over its median time) is printed beside this CPU's measured
bfloat16 and float32 ``torch.mm`` throughput at the same thread count: the gap between the
two is what is left to gain in the arithmetic (the rest of the step is memory-bound:
batch norm, activations, pooling).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

PRETRAIN_VARIANTS = ("fp32_cl", "fp32", "bf16", "bf16_cl", "bf16_cl_compile")
USB_VARIANTS = ("fp32", "fp32_cl", "bf16", "bf16_cl")


def mm_gflops(dtype, threads: int, n: int = 2048, reps: int = 5) -> float:
    """Measured ``torch.mm`` throughput of ``n x n`` matrices of ``dtype``, GFLOP/s."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts) / 1e9


def step_flops(fn) -> int:
    """Convolution/matmul FLOPs of one call of ``fn`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


class PretrainStep:
    """One pretraining step in a variant (see module doc)."""

    def __init__(self, variant: str, images, ds, *, batch_size: int = 256, image_size: int = 16):
        import torch

        from ..features.augment import augmentation_for
        from ..features.backbone import build_backbone
        from ..features.objectives import build_objective
        from ..features.pretrain import InputPipeline
        from ..precision import autocast_factory
        torch.manual_seed(0)
        cl = variant.startswith(("fp32_cl", "bf16_cl"))
        self.model = build_objective("simsiam", build_backbone("cnn4"))
        if cl:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.06, momentum=0.9,
                                   weight_decay=5e-4)
        self.pipe = InputPipeline(ds.mean, ds.std, 1, channels_last=cl)
        self.amp = autocast_factory(variant.startswith("bf16"))
        self.fwd = torch.compile(self.model) if variant.endswith("compile") else self.model
        self.aug = augmentation_for(ds.name, 1)
        self.g = torch.Generator().manual_seed(0)
        self.images, self.bs, self.size, self.i = images, batch_size, image_size, 0
        self.compile_s = None
        if variant.endswith("compile"):
            t = time.perf_counter()
            self()
            self.compile_s = time.perf_counter() - t

    def __call__(self):
        n = len(self.images) // self.bs
        xb = self.images[(self.i % n) * self.bs:(self.i % n + 1) * self.bs]
        self.i += 1
        v1 = self.pipe(xb, self.aug, self.g, self.size)
        v2 = self.pipe(xb, self.aug, self.g, self.size)
        with self.amp():
            loss, _ = self.fwd(v1, v2)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class UsbStep:
    """One USB FlexMatch iteration in a variant, built as the plugin's entry builds it."""

    def __init__(self, variant: str, tmp: str, iters: int, lb_file: str):
        import torch

        from .usb_step_time import CONFIG_DIR, Stepper, build
        cfg = str(CONFIG_DIR / "fashion_mnist" / "as3l_flexmatch_fashion_mnist_10_0.yaml")
        alg = build(cfg, "flexmatch", tmp, iters, lb_index_file=lb_file, seed=0,
                    batch_size=16, uratio=3, cpu_bf16=variant.startswith("bf16"))
        if not variant.endswith("_cl"):  # the plugin now makes CPU models channels-last
            for m in (alg.model, alg.ema_model):
                m.to(memory_format=torch.contiguous_format)
        self.alg, self.stepper = alg, Stepper(alg)

    def __call__(self):
        self.stepper.step()


def _time(fn, steps):
    w, c = [], []
    for _ in range(steps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        w.append(time.perf_counter() - t0)
        c.append(time.process_time() - c0)
    return statistics.median(w), statistics.median(c)


def interleaved(steps_by_name, *, rounds: int, steps: int, warmup: int):
    names = list(steps_by_name)
    for fn in steps_by_name.values():
        for _ in range(warmup):
            fn()
    walls = {n: [] for n in names}
    cpus = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            w, c = _time(steps_by_name[n], steps)
            walls[n].append(w)
            cpus[n].append(c)
    peer = names[0]
    out = {}
    for n in names:
        ratios = [p / v for p, v in zip(walls[peer], walls[n])]
        out[n] = {"wall_s": statistics.median(walls[n]), "cpu_s": statistics.median(cpus[n]),
                  "speedup": statistics.median(ratios),
                  "speedup_q": (float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75)))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--which", default="pretrain,usb")
    ap.add_argument("--pretrain-variants", default=",".join(PRETRAIN_VARIANTS))
    ap.add_argument("--usb-variants", default=",".join(USB_VARIANTS))
    args = ap.parse_args(argv)

    import torch

    import as3l_plugin.usb  # noqa: F401  (registers the plugin's algorithms)
    from ..datasets import load_dataset
    from .usb_step_time import _write_inputs
    ds = load_dataset("fashion_mnist")
    images = torch.from_numpy(np.array(ds.x_train[:256 * 16], copy=True))
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        peaks = {"bf16": mm_gflops(torch.bfloat16, threads),
                 "fp32": mm_gflops(torch.float32, threads)}
        print(f"\n## {threads} thread(s); torch.mm 2048^2: {peaks['bf16']:.0f} GFLOP/s bf16, "
              f"{peaks['fp32']:.0f} GFLOP/s fp32", flush=True)
        for which in args.which.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                if which == "pretrain":
                    fns = {v: PretrainStep(v, images, ds)
                           for v in args.pretrain_variants.split(",")}
                else:
                    lb, _ = _write_inputs("fashion_mnist", 10, 0, Path(tmp))
                    iters = args.warmup + args.rounds * args.steps + 5
                    fns = {v: UsbStep(v, tmp, iters, lb) for v in args.usb_variants.split(",")}
                res = interleaved(fns, rounds=args.rounds, steps=args.steps,
                                  warmup=args.warmup)
                new = "bf16_cl"
                flops = step_flops(fns[new]) if new in fns else 0
            peer = next(iter(res))
            print(f"\n{which} step, load average {os.getloadavg()[0]:.1f} on "
                  f"{os.cpu_count()} cores; peer = {peer}")
            print(f"| variant | wall s/step | CPU s/step | speed-up over {peer} (IQR) |")
            print("|---|---|---|---|")
            for v, r in res.items():
                comp = getattr(fns[v], "compile_s", None)
                extra = f" (+{comp:.0f} s compile)" if comp else ""
                print(f"| {v}{extra} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | "
                      f"{r['speedup']:.2f}x ({r['speedup_q'][0]:.2f}-{r['speedup_q'][1]:.2f}) |")
            if flops:
                g = flops / res[new]["wall_s"] / 1e9
                print(f"{new}: {flops / 1e9:.1f} GFLOP per step -> {g:.0f} GFLOP/s "
                      f"({100 * g / peaks['bf16']:.0f}% of the bf16 torch.mm throughput)",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
