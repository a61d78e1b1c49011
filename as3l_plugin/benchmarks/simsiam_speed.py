"""SimSiam step time of the small CNN on Fashion-MNIST: what makes pretraining fast on a CPU.

Run::

    python -m as3l_plugin.benchmarks.simsiam_speed                 # 1 thread, 6 steps each
    python -m as3l_plugin.benchmarks.simsiam_speed --threads 2 --steps 10

Every variant runs the same SimSiam step (two augmented views of a batch of Fashion-MNIST
training images, cnn4 + projector + predictor, symmetric loss, SGD) in this process, in turn,
after one warm-up step. Variants, each changing one thing from the previous:

1. ``pil``: the usual torchvision pipeline — per-image PIL ``RandomResizedCrop``,
   ``RandomAffine``, flip, ``ColorJitter``, ``ToTensor`` for both views — NCHW tensors;
2. ``batched``: our batched tensor augmentation (:mod:`as3l_plugin.features.augment`);
3. ``channels_last``: model and inputs in channels-last memory format (oneDNN's fast path);
4. ``size20`` / ``size16``: augmented views of 20x20 / 16x16 pixels (``--image-size``);
   cost scales with pixels, features are still extracted at 28x28;
5. ``compile``: ``torch.compile`` of the model on top of ``channels_last`` (its compile time
   is reported separately, not in the step time).

Reported per variant: wall seconds per step, **CPU seconds per step** (``time.process_time``:
with one thread this is what the step costs, largely independent of other jobs sharing the
machine), the implied seconds per 60,000-image epoch from each, and the speed-up over ``pil``
(CPU time). The wall-clock load average is printed so loaded figures can be recognised.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _pil_views(x_uint8, tf):
    import torch
    from PIL import Image
    return torch.stack([tf(Image.fromarray(a)) for a in x_uint8])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--variants", default="pil,batched,channels_last,size20,size16,compile")
    args = ap.parse_args(argv)

    import torch
    from torchvision import transforms as T

    from ..datasets import load_dataset
    from ..features.augment import augmentation_for
    from ..features.pretrain import InputPipeline
    from ..features.simsiam import NegativeCosineLoss, SimSiam
    from ..nets import cnn4

    torch.set_num_threads(args.threads)
    ds = load_dataset("fashion_mnist")
    bs = args.batch_size
    images = torch.from_numpy(np.array(ds.x_train[: bs * (args.steps + 1)], copy=True))
    aug = augmentation_for("fashion_mnist", 1)
    pil_tf = T.Compose([T.RandomResizedCrop(28, scale=(0.35, 1.0)),
                        T.RandomAffine(10, translate=(0.125, 0.125)),
                        T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
                        T.ToTensor(), T.Normalize(ds.mean, ds.std)])
    crit = NegativeCosineLoss()
    rows = []
    for name in args.variants.split(","):
        torch.manual_seed(0)
        cl = name != "pil" and name != "batched"
        size = {"size20": 20, "size16": 16}.get(name, 28)
        model = SimSiam(cnn4())
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
        pipe = InputPipeline(ds.mean, ds.std, 1, channels_last=cl)
        step_model = model
        compile_s = None
        if name == "compile":
            t = time.perf_counter()
            step_model = torch.compile(model)
        g = torch.Generator().manual_seed(0)

        def step(i):
            xb = images[i * bs:(i + 1) * bs]
            if name == "pil":
                v1, v2 = _pil_views(xb.numpy(), pil_tf), _pil_views(xb.numpy(), pil_tf)
            else:
                v1, v2 = pipe(xb, aug, g, size), pipe(xb, aug, g, size)
            loss = crit(*step_model(v1, v2))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step(0)  # warm-up (and compilation)
        if name == "compile":
            compile_s = time.perf_counter() - t
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(1, args.steps + 1):
            step(i)
        wall = (time.perf_counter() - w0) / args.steps
        cpu = (time.process_time() - c0) / args.steps
        rows.append((name, wall, cpu, compile_s))
        print(f"  {name:14s} wall {wall:6.2f} s/step  cpu {cpu:6.2f} s/step", flush=True)

    per_epoch = 60000 // bs
    base_cpu = rows[0][2]
    load = os.getloadavg()[0]
    print(f"\nSimSiam step, cnn4, Fashion-MNIST, batch {bs} pairs, {args.threads} thread(s), "
          f"{args.steps} steps; load average {load:.1f} on {os.cpu_count()} cores")
    print("| variant | wall s/step | CPU s/step | epoch (60k) from CPU time | "
          f"epoch from wall time | speed-up vs {rows[0][0]} (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, wall, cpu, comp in rows:
        extra = f" (+{comp:.0f} s compile)" if comp else ""
        print(f"| {name}{extra} | {wall:.2f} | {cpu:.2f} | {cpu * per_epoch / 60:.1f} min | "
              f"{wall * per_epoch / 60:.1f} min | {base_cpu / cpu:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
