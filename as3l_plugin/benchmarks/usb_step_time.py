"""Per-iteration cost of ``as3l_flexmatch`` against ``flexmatch``, and of one prior refresh.

Run::

    python -m as3l_plugin.benchmarks.usb_step_time                       # digits, CPU
    python -m as3l_plugin.benchmarks.usb_step_time --dataset fashion_mnist --repeats 20

Three algorithms are built in one process from the same USB config
(``usb_configs/<dataset>/as3l_flexmatch_<dataset>_10_0.yaml``: net ``cnn4``; batch 16 and
μ 7 unless ``--batch-size`` / ``--uratio`` say otherwise),
with the same seed, labeled set (an index file) and data order:

- ``flexmatch`` — USB's FlexMatch, the peer;
- ``as3l_prior`` — ``as3l_flexmatch`` while the prior is mixed in (iteration < ``prior_T``;
  mode ``remove``): the dataset adds ``prior_ulb`` to each item and the pseudo-label is
  ``normalize(prior + p_weak)``;
- ``as3l_after_T`` — ``as3l_flexmatch`` after ``prior_T`` (mode ``remove``: plain FlexMatch
  plus the plugin's hook).

They are stepped *interleaved*: ``--repeats`` rounds, in each round every algorithm runs
``--steps`` iterations (the order rotates between rounds), so load from other processes hits
all of them alike; the ratio to ``flexmatch`` is taken within each round and its median over
rounds is reported (with the interquartile range). One iteration is what USB's training
loop does per batch: fetch the labeled and unlabeled batches (augmentations;
``num_workers: 0``), ``before_train_step`` hooks, ``process_batch`` + ``train_step``,
``after_train_step`` hooks (backward, SGD step, EMA); evaluation, checkpointing and logging are pushed out of the window. The first
``--warmup`` iterations of each algorithm are not timed. Reported: median seconds per
iteration (whole iteration, and the compute part without the batch fetch) and the paired
ratio to ``flexmatch``; also the process CPU time per iteration (the work of one core,
which load from other processes inflates less than the wall time).

Refresh (mode ``update``): the time of :meth:`PriorHook.refresh` — features of the whole pool
with the EMA model (eval mode, ``eval_batch_size``) plus the seeded K-means propagation at
``prior_update_ks`` — measured ``--refreshes`` times, next to one training epoch = one pass
over the unlabeled set = ``ceil(ulb_len / (batch_size * uratio))`` iterations at the median
``flexmatch`` iteration time.

The prior is random (Dirichlet) and the labeled set stratified: costs do not depend on
their content. Threads: ``--threads`` (default 1, steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG_DIR = Path(__file__).resolve().parents[2] / "usb_configs"
NAMES = ("flexmatch", "as3l_prior", "as3l_after_T")


def _write_inputs(dataset: str, num_labels: int, seed: int, folder: Path) -> tuple[str, str]:
    from ..datasets import load_dataset
    y = load_dataset(dataset).y_train
    rng = np.random.default_rng(seed)
    c = int(y.max()) + 1
    lb = np.concatenate([rng.choice(np.flatnonzero(y == k), num_labels // c, replace=False)
                         for k in range(c)]).astype(np.int64)
    prior = rng.dirichlet(np.ones(c), size=len(y)).astype(np.float32)
    prior /= prior.sum(1, keepdims=True)
    np.save(folder / "lb.npy", lb)
    np.save(folder / "prior.npy", prior)
    return str(folder / "lb.npy"), str(folder / "prior.npy")


def build(config: str, algorithm: str, save_dir: str, iters: int, **overrides):
    """An algorithm built as the plugin's entry builds it (CPU), ready to step ``iters``
    iterations without evaluation, checkpoint or log (USB's samplers materialise
    ``num_train_iter / epoch`` batches of indices, so ``iters`` is kept to what is used)."""
    import torch

    from ..usb import compat
    from ..usb.train import build_algorithm, get_config
    args = get_config(config, algorithm=algorithm, save_dir=save_dir, save_name=algorithm,
                      resume=False, use_tensorboard=False, use_pretrain=False,
                      num_train_iter=iters + 2, epoch=1, num_eval_iter=10 ** 9,
                      num_log_iter=10 ** 9, gpu="cpu", multiprocessing_distributed=False,
                      **overrides)
    args.distributed = False
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    logger = logging.getLogger("usb_step_time")
    logger.setLevel(logging.WARNING)
    alg = build_algorithm(args, logger=logger)
    device = compat.resolve_device(args)
    alg.model = compat.send_model(args, alg.model, device)
    alg.ema_model = compat.send_model(args, alg.ema_model, device, clip_batch=False)
    return alg


class Stepper:
    """Runs USB's training loop body one iteration at a time (see module doc)."""

    def __init__(self, alg):
        self.alg = alg
        alg.model.train()
        alg.call_hook("before_run")
        alg.epoch = 0
        alg.call_hook("before_train_epoch")
        self.lb = iter(alg.loader_dict["train_lb"])
        self.ulb = iter(alg.loader_dict["train_ulb"])

    def step(self) -> tuple[float, float, float]:
        """One iteration; returns (whole iteration, compute without the fetch, process CPU
        time of the whole iteration) in seconds."""
        alg = self.alg
        c0 = time.process_time()
        t0 = time.perf_counter()
        data_lb, data_ulb = next(self.lb), next(self.ulb)
        t1 = time.perf_counter()
        alg.call_hook("before_train_step")
        alg.out_dict, alg.log_dict = alg.train_step(**alg.process_batch(**data_lb, **data_ulb))
        alg.call_hook("after_train_step")
        alg.it += 1
        t2 = time.perf_counter()
        return t2 - t0, t2 - t1, time.process_time() - c0


def run(dataset="digits", *, num_labels=10, steps=4, repeats=40, warmup=5, refreshes=3,
        threads=1, seed=0, batch_size=16, uratio=7, verbose=True) -> dict:
    import torch

    import as3l_plugin.usb  # noqa: F401  (registers as3l_flexmatch)
    torch.set_num_threads(threads)
    config = str(CONFIG_DIR / dataset / f"as3l_flexmatch_{dataset}_{num_labels}_0.yaml")
    say = print if verbose else (lambda *a, **k: None)
    with tempfile.TemporaryDirectory() as tmp:
        lb_file, prior_file = _write_inputs(dataset, num_labels, seed, Path(tmp))
        common = dict(lb_index_file=lb_file, seed=seed, batch_size=batch_size, uratio=uratio)
        as3l = dict(common, prior_file=prior_file, prior_mode="remove")
        iters = warmup + steps * repeats
        algs = {
            "flexmatch": build(config, "flexmatch", tmp, iters, **common),
            "as3l_prior": build(config, "as3l_flexmatch", tmp, iters, prior_T=10 ** 9, **as3l),
            "as3l_after_T": build(config, "as3l_flexmatch", tmp, iters, prior_T=0, **as3l),
        }
        steppers = {k: Stepper(a) for k, a in algs.items()}
        for name, st in steppers.items():
            for _ in range(warmup):
                st.step()
        times = {k: ([], [], []) for k in NAMES}
        rounds = {k: ([], []) for k in NAMES}  # per-round medians (whole, compute)
        order = list(NAMES)
        for r in range(repeats):
            for name in order:
                for _ in range(steps):
                    for j, v in enumerate(steppers[name].step()):
                        times[name][j].append(v)
                rounds[name][0].append(statistics.median(times[name][0][-steps:]))
                rounds[name][1].append(statistics.median(times[name][1][-steps:]))
            order = order[1:] + order[:1]
            if (r + 1) % max(1, repeats // 6) == 0 or r + 1 == repeats:
                say(f"round {r + 1}/{repeats}: " + ", ".join(
                    f"{k} {rounds[k][0][-1] * 1e3:.1f} ms" for k in NAMES))
        assert algs["as3l_prior"].prior_hook.is_active(algs["as3l_prior"].it)
        assert not algs["as3l_after_T"].prior_hook.is_active(0)

        res = {"dataset": dataset, "threads": threads, "steps": steps, "repeats": repeats,
               "batch_size": algs["flexmatch"].args.batch_size,
               "uratio": algs["flexmatch"].args.uratio}
        for name in NAMES:
            res[name] = {"iter_s": statistics.median(times[name][0]),
                         "compute_s": statistics.median(times[name][1]),
                         "cpu_s": statistics.median(times[name][2])}
        for name in NAMES[1:]:
            # paired: the ratio within each round (same load), then the median over rounds
            for key, j in (("iter", 0), ("compute", 1)):
                per_round = [a / b for a, b in zip(rounds[name][j], rounds["flexmatch"][j])]
                q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
                res[name][f"ratio_{key}"] = statistics.median(per_round)
                res[name][f"ratio_{key}_iqr"] = (q[0], q[-1])
        for a in algs.values():
            del a
        algs.clear()
        steppers.clear()

        # one refresh (mode update) vs one training epoch
        upd = build(config, "as3l_flexmatch", tmp, 1, prior_mode="update", prior_T=0,
                    prior_update_interval=1, prior_file=prior_file, **common)
        hook = upd.prior_hook
        ext, total = [], []
        inner = upd.extract_pool_features

        def timed_extract():
            t = time.perf_counter()
            out = inner()
            ext.append(time.perf_counter() - t)
            return out

        upd.extract_pool_features = timed_extract
        upd.print_fn = lambda *a, **k: None
        for i in range(refreshes):
            upd.it = i
            t = time.perf_counter()
            hook.refresh(upd)
            total.append(time.perf_counter() - t)
        ulb_len = len(upd.dataset_dict["train_ulb"])
        iters_per_epoch = math.ceil(ulb_len / (upd.args.batch_size * upd.args.uratio))
        epoch_s = iters_per_epoch * res["flexmatch"]["iter_s"]
        res["refresh"] = {"total_s": statistics.median(total), "features_s": statistics.median(ext),
                          "propagate_s": statistics.median(total) - statistics.median(ext),
                          "pool": ulb_len, "ks": list(hook.update_ks),
                          "epoch_iters": iters_per_epoch, "epoch_s": epoch_s,
                          "ratio_to_epoch": statistics.median(total) / epoch_s}
    return res


def report(res: dict) -> str:
    f = res["flexmatch"]
    lines = [f"{res['dataset']} (cnn4, batch {res['batch_size']}, mu {res['uratio']}, CPU, "
             f"{res['threads']} thread(s); median of {res['steps'] * res['repeats']} iterations "
             "each, interleaved)",
             "ratio = median over rounds of the round's as3l/flexmatch median (IQR in brackets)",
             f"{'algorithm':<26}{'s/iter':>8}{'ratio':>22}{'compute s/iter':>16}{'ratio':>22}",
             f"{'flexmatch':<26}{f['iter_s']:>8.4f}{'1':>22}{f['compute_s']:>16.4f}{'1':>22}"]
    labels = {"as3l_prior": "as3l_flexmatch (it < T)", "as3l_after_T": "as3l_flexmatch (after T)"}
    for name in NAMES[1:]:
        r = res[name]
        ri = "{:.3f} [{:.3f}-{:.3f}]".format(r["ratio_iter"], *r["ratio_iter_iqr"])
        rc = "{:.3f} [{:.3f}-{:.3f}]".format(r["ratio_compute"], *r["ratio_compute_iqr"])
        lines.append(f"{labels[name]:<26}{r['iter_s']:>8.4f}{ri:>22}{r['compute_s']:>16.4f}{rc:>22}")
    lines.append("process CPU time per iteration (one core's work): "
                 + ", ".join(f"{k} {res[k]['cpu_s']:.4f} s" for k in NAMES))
    u = res["refresh"]
    lines.append(f"update refresh: {u['total_s']:.2f} s (features of {u['pool']} samples "
                 f"{u['features_s']:.2f} s + seeded K-means at K={u['ks']} {u['propagate_s']:.2f} s)"
                 f" vs one epoch ({u['epoch_iters']} iterations) {u['epoch_s']:.1f} s: "
                 f"{100 * u['ratio_to_epoch']:.1f}% of an epoch")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=("digits", "fashion_mnist"))
    p.add_argument("--num-labels", type=int, default=10, choices=(10, 40))
    p.add_argument("--steps", type=int, default=4, help="iterations per algorithm per round")
    p.add_argument("--repeats", type=int, default=40, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--refreshes", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--uratio", type=int, default=7, help="mu (the configs' fashion_mnist uses 3)")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    res = run(a.dataset, num_labels=a.num_labels, steps=a.steps, repeats=a.repeats,
              warmup=a.warmup, refreshes=a.refreshes, threads=a.threads, seed=a.seed,
              batch_size=a.batch_size, uratio=a.uratio)
    print(report(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
