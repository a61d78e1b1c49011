"""Cost of one ``update`` refresh of the prior: ``prior_update_features: extract`` vs ``bank``.

Run::

    python -m as3l_plugin.benchmarks.prior_refresh                   # Fashion-MNIST, 60k pool
    python -m as3l_plugin.benchmarks.prior_refresh --n 20000 --rounds 3
    python -m as3l_plugin.benchmarks.prior_refresh --synthetic --n 2000

The pool: the Fashion-MNIST training images (``/usr/share/datasets/fashion-mnist``, or
``AS3L_FASHION_MNIST_DIR``) when present, else (or with ``--synthetic``) random 28x28 uint8
images; ``--n`` draws that many (seeded). ``--num-labels`` of them (stratified) are the
labeled set and the rest the unlabeled set, as with ``include_lb_to_ulb: False``, so the
labeled rows are never seen by a training step and a ``bank`` refresh has to extract them
(the worst case; with USB's default ``include_lb_to_ulb: True`` it extracts nothing).

Both modes run the plugin's own code: :meth:`PriorHook.refresh` of a hook built as
``as3l_flexmatch`` builds it (``prior_update_ks``, seeded K-means propagation), on an
algorithm stand-in whose ``extract_pool_features`` *is*
:meth:`AS3LFlexMatch.extract_pool_features` (the pool dataset, the eval transform, the EMA
model ``cnn4`` in eval mode, ``eval_batch_size``, ``amp_cm``: CPU bf16 autocast under
``--cpu-bf16`` true / auto on a CPU with native bf16). A refresh's time is the whole
:meth:`~PriorHook.refresh` call: the features (``extract``: the forward pass over the pool;
``bank``: a copy of the bank plus the forward pass over its never-seen rows), the
propagation and the new prior. Nothing is excluded from it.

The bank is filled before timing as training fills it: :meth:`PriorHook.record_features` on
every unlabeled row, in batches of ``batch_size * uratio``, with the weak-view features of a
copy of the model in train mode (what FlexMatch's step computes anyway; that forward pass
is not the bank's cost). The recording itself *is* the bank's cost during training: its
median time per batch is reported, and its total over ``--interval`` iterations (one
refresh interval) is added to the bank's refresh in the "with recording" column.

The two modes are timed interleaved: ``--rounds`` rounds, each refreshing with both modes
(the order alternates); reported are the medians over rounds and the median of the per-round
ratio extract / bank. Threads: ``--threads`` (default 1).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from types import SimpleNamespace as NS

import numpy as np

MODES = ("extract", "bank")


def load_pool(n=None, *, synthetic=False, seed=0, data_dir=None):
    """``(x uint8 (n, 28, 28), y int64 (n,), mean, std, source)``."""
    rng = np.random.default_rng(seed)
    x = y = None
    source = "synthetic"
    if not synthetic:
        from ..datasets import load_fashion_mnist_dataset
        from ..errors import DatasetError
        try:
            ds = load_fashion_mnist_dataset(data_dir)
            x, y, mean, std, source = ds.x_train, ds.y_train, ds.mean, ds.std, "fashion_mnist"
        except DatasetError:
            x = None
    if x is None:
        total = int(n or 60000)
        x = rng.integers(0, 256, size=(total, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=total).astype(np.int64)
        mean, std = (float(x.mean()) / 255,), (float(x.std()) / 255,)
    if n is not None and n < len(x):
        keep = np.sort(rng.choice(len(x), int(n), replace=False))
        x, y = x[keep], y[keep]
    return np.ascontiguousarray(x), np.asarray(y, np.int64), mean, std, source


def stratified(y, num_labels, seed):
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = max(1, num_labels // len(classes))
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), min(per, int((y == c).sum())),
                                              replace=False) for c in classes])).astype(np.int64)


def make_algorithm(x, y, lb, mean, std, *, eval_batch_size, cpu_bf16, seed):
    """A stand-in with what :meth:`AS3LFlexMatch.extract_pool_features` reads."""
    import torch

    from ..nets import cnn4
    from ..precision import autocast_factory, use_cpu_bf16
    from ..usb.algorithm import AS3LFlexMatch
    from ..usb.datasets import make_transforms
    torch.manual_seed(seed)
    ulb = np.setdiff1d(np.arange(len(x)), lb)
    weak, _, evaluation = make_transforms(x.shape[1], mean, std, flip=False)
    model = cnn4(num_classes=int(y.max()) + 1).to(memory_format=torch.channels_last)
    alg = NS(it=0, print_fn=lambda *a, **k: None, ema_model=model, model=copy.deepcopy(model),
             args=NS(eval_batch_size=eval_batch_size, num_workers=0),
             amp_cm=autocast_factory(use_cpu_bf16(cpu_bf16, "cpu")),
             dataset_dict={"train_lb": NS(data=x[lb], orig_index=lb),
                           "train_ulb": NS(data=x[ulb], orig_index=ulb, orig_len=len(x)),
                           "eval": NS(transform=evaluation)})
    alg.extract_pool_features = AS3LFlexMatch.extract_pool_features.__get__(alg)
    return alg, ulb, weak


def fill_bank(hook, alg, x, ulb, weak, batch):
    """Record every unlabeled row once as training would; returns the record times (s)."""
    import torch
    from PIL import Image
    model = alg.model
    model.train()
    times = []
    order = np.random.default_rng(0).permutation(len(ulb))
    with torch.no_grad():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            xb = torch.stack([weak(Image.fromarray(x[ulb[i]])) for i in idx])
            with alg.amp_cm():
                feats = model(xb, only_feat=False)["feat"]
            t = time.perf_counter()
            hook.record_features(torch.as_tensor(idx), feats, it=0)
            times.append(time.perf_counter() - t)
    return times


def run(n=None, *, synthetic=False, rounds=3, num_labels=40, ks=(10, 20, 30, 40, 50, 60),
        eval_batch_size=1024, batch_size=16, uratio=7, interval=300, threads=1, seed=0,
        cpu_bf16="auto", data_dir=None, verbose=True) -> dict:
    import torch

    from ..usb.hooks import PriorHook
    torch.set_num_threads(threads)
    say = print if verbose else (lambda *a, **k: None)
    x, y, mean, std, source = load_pool(n, synthetic=synthetic, seed=seed, data_dir=data_dir)
    lb = stratified(y, num_labels, seed)
    alg, ulb, weak = make_algorithm(x, y, lb, mean, std, eval_batch_size=eval_batch_size,
                                    cpu_bf16=cpu_bf16, seed=seed)
    c = int(y.max()) + 1
    prior = np.full((len(x), c), 1.0 / c, np.float32)
    hooks = {m: PriorHook(prior, ulb, T=0, mode="update", update_interval=interval,
                          update_ks=ks, labeled_index=lb, labeled_targets=y[lb], seed=seed,
                          features=m) for m in MODES}
    say(f"pool {len(x)} ({source}), {len(lb)} labeled; filling the bank ...")
    record = fill_bank(hooks["bank"], alg, x, ulb, weak, batch_size * uratio)
    assert int((hooks["bank"].bank_seen_ < 0).sum()) == len(lb)

    parts = {m: {"total": [], "features": [], "propagate": []} for m in MODES}
    for m, hook in hooks.items():  # time the two parts inside refresh()
        def timed(fn, key, _m=m):
            def inner(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    parts[_m][key].append(time.perf_counter() - t)
            return inner
        hook.pool_features = timed(hook.pool_features, "features")
        hook._propagate = timed(hook._propagate, "propagate")
    extracted = {}
    for r in range(rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]
        for m in order:
            alg.it = r
            t = time.perf_counter()
            hooks[m].refresh(alg)
            parts[m]["total"].append(time.perf_counter() - t)
            extracted[m] = hooks[m].last_refresh_extracted_
        say(f"round {r + 1}/{rounds}: " + ", ".join(f"{m} {parts[m]['total'][-1]:.2f} s"
                                                      for m in MODES))
    rec_batch = statistics.median(record)
    res = {"n": len(x), "source": source, "labeled": len(lb), "rounds": rounds, "ks": list(ks),
           "threads": threads, "eval_batch_size": eval_batch_size, "interval": interval,
           "record_batch": batch_size * uratio, "record_s_per_step": rec_batch,
           "record_s_per_interval": rec_batch * interval,
           "bank_mb": hooks["bank"].bank_.numel() * 4 / 2 ** 20,
           "cpu_bf16": bool(alg.amp_cm is not __import__("contextlib").nullcontext)}
    for m in MODES:
        res[m] = {k: statistics.median(v) for k, v in parts[m].items()}
        res[m]["extracted"] = extracted[m]
    per_round = [a / b for a, b in zip(parts["extract"]["total"], parts["bank"]["total"])]
    res["ratio"] = statistics.median(per_round)
    res["ratio_with_record"] = statistics.median(
        [a / (b + res["record_s_per_interval"])
         for a, b in zip(parts["extract"]["total"], parts["bank"]["total"])])
    return res


def report(res: dict) -> str:
    lines = [f"one prior refresh, pool {res['n']} ({res['source']}, {res['labeled']} labeled "
             f"outside the unlabeled set), cnn4, eval_batch_size {res['eval_batch_size']}, "
             f"K={res['ks']}, CPU {res['threads']} thread(s), bf16 {res['cpu_bf16']}; "
             f"median of {res['rounds']} interleaved rounds",
             f"{'mode':<10}{'refresh s':>11}{'features s':>12}{'propagate s':>13}"
             f"{'rows extracted':>16}{'with recording s':>18}"]
    for m in MODES:
        r = res[m]
        rec = r["total"] + (res["record_s_per_interval"] if m == "bank" else 0.0)
        lines.append(f"{m:<10}{r['total']:>11.2f}{r['features']:>12.2f}{r['propagate']:>13.2f}"
                     f"{r['extracted']:>16d}{rec:>18.2f}")
    lines.append(f"ratio extract / bank (median of per-round ratios): {res['ratio']:.1f}x; "
                 f"counting the bank's recording over one interval of {res['interval']} "
                 f"iterations ({res['record_s_per_step'] * 1e3:.3f} ms per step of "
                 f"{res['record_batch']} rows): {res['ratio_with_record']:.1f}x")
    lines.append(f"bank: {res['bank_mb']:.1f} MiB (float32) + last-seen iterations, saved in "
                 "every checkpoint")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="pool size (default: all 60000)")
    p.add_argument("--synthetic", action="store_true", help="random images, not Fashion-MNIST")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--num-labels", type=int, default=40)
    p.add_argument("--ks", default="10,20,30,40,50,60", help="prior_update_ks")
    p.add_argument("--eval-batch-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=16, help="labeled batch (recording: x uratio)")
    p.add_argument("--uratio", type=int, default=7)
    p.add_argument("--interval", type=int, default=300, help="prior_update_interval")
    p.add_argument("--cpu-bf16", default="auto", help="true | false | auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    from ..usb.algorithm import int_list
    res = run(a.n, synthetic=a.synthetic, rounds=a.rounds, num_labels=a.num_labels,
              ks=tuple(int_list(a.ks)), eval_batch_size=a.eval_batch_size,
              batch_size=a.batch_size, uratio=a.uratio, interval=a.interval,
              threads=a.threads, seed=a.seed, cpu_bf16=a.cpu_bf16, data_dir=a.data_dir)
    print(report(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
