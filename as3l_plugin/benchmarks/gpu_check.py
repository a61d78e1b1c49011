"""GPU check: the whole AS3L path on one device, in minutes, with a per-stage report.

Run::

    python -m as3l_plugin.benchmarks.gpu_check --device cuda --out gpu_check   # ~10 min budget
    python -m as3l_plugin.benchmarks.gpu_check --tiny --device cpu --out /tmp/gc  # toy size

Stages (each timed; a failed stage is reported and the ones that need it are skipped):

``data``
    Synthetic CIFAR-10 in USB's on-disk layout, ``<out>/data/cifar10/cifar-10-batches-py``
    (torchvision's pickled batches, what ``semilearn``'s ``cifar10`` loader reads): uint8
    ``(n, 32, 32, 3)`` images, one noisy colour pattern per class. Their checksums are not
    the real archive's, so while the check runs torchvision's ``check_integrity`` accepts
    files under that folder (:class:`SyntheticCifarAccess`; also in every process
    ``mp.spawn`` starts) and any download attempt there is an error.
``pretrain``
    SimSiam on WRN-28-2 (``wrn_28_2``), AMP (float16 + gradient scaler) on CUDA.
``features``
    ``f_self`` float32 ``(n, 128)`` of the train split.
``select`` / ``propagate``
    ``as3l`` sampler (budget = 4 per class) and the ``seeded_kmeans`` prior
    float32 ``(n, 10)`` from the synthetic labels of the selected rows.
``train_as3l`` / ``resume`` / ``train_flexmatch``
    ``as3l_flexmatch`` (prior mixed for the first half, then mode ``update``: the pool's
    features are re-extracted on the device and the prior recomputed) and ``flexmatch``
    through the plugin's USB entry (:func:`as3l_plugin.usb.train.train`, what ``as3l train``
    runs) with USB's GPU settings (``gpu: 0``, ``amp: True``; ``gpu: cpu`` on a CPU). The
    ``as3l_flexmatch`` checkpoint of the half-way iteration is resumed to the end.
``ddp_1proc``
    ``multiprocessing_distributed`` with world size 1 (nccl on CUDA, gloo on a CPU): the
    rank :func:`~as3l_plugin.usb.train.main_worker` runs in this process with a
    ``DistributedDataParallel`` model.
``ddp_2proc``
    Two ranks (``mp.spawn``, nccl) where two GPUs exist; skipped otherwise.
``clustering``
    ``clustering.kmeans(X, 100, max_iter=10, tol=0, inertia_tol=0, device=dev, fit_rows=None)`` on
    ``X`` float32 ``(1_000_000, 128)`` (tiny: ``(20_000, 128)``): rows x iterations per second
    and GEMM flop/s (``2 n d K`` per iteration).

**Device check** (``train_step_tensors_on_device``, :class:`DeviceCheckHook`): during the
first ``check_steps`` training steps of every run it records the device of every tensor
that reaches ``train_step`` (the batch: ``x_lb``, ``y_lb``, ``idx_ulb``, ``x_ulb_w``,
``x_ulb_s``, ``prior_ulb``) and that it returns (loss, features), of every model input
(forward pre-hooks on the model and the EMA model), of the prior rows mixed into the
pseudo-label and the prior table they come from (``as3l_flexmatch``), of FlexMatch's
class-wise state, of every weight of both models and of the optimizer state; plus every
model input during evaluation and during the ``update`` refresh's pool extraction. The check
passes when all of them are on the requested device type. Per-step wall times of the same
hook (median over the timed steps) give the ``as3l_flexmatch / flexmatch`` ratio.

Writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.txt`` (the printed table). Exit code 0
when every stage passed or was skipped, 1 when one failed, 2 on bad input (one line).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import pickle
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ..errors import AS3LError, ParameterError

NUM_CLASSES = 10
TIME_BUDGET_S = 600.0

#: step counts and sizes; ``full`` is sized for one modern GPU within TIME_BUDGET_S
SIZES = {
    "full": dict(n_train=10_000, n_test=1_000, pretrain_steps=300, pretrain_batch=256,
                 iters=300, ddp_iters=100, batch_size=64, uratio=7, eval_batch_size=256,
                 num_workers=8, per_class=4, check_steps=3, cluster_n=1_000_000,
                 cluster_d=128),
    "tiny": dict(n_train=200, n_test=40, pretrain_steps=3, pretrain_batch=16, iters=4,
                 ddp_iters=2, batch_size=4, uratio=1, eval_batch_size=64, num_workers=0,
                 per_class=1, check_steps=2, cluster_n=20_000, cluster_d=128),
}


# --------------------------------------------------------------------------- synthetic data
def write_synthetic_cifar10(root, n_train: int, n_test: int, seed: int = 0) -> np.ndarray:
    """torchvision's CIFAR-10 layout under ``root/cifar10/cifar-10-batches-py``.

    Images: class ``c`` is a fixed random 4x4 colour pattern upsampled to 32x32 plus uniform
    noise (learnable, not trivial). Returns the train labels, int64 ``(n_train,)``.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.integers(40, 216, (NUM_CLASSES, 4, 4, 3)).repeat(8, 1).repeat(8, 2)

    def batch(y):
        noise = rng.integers(-40, 41, (len(y), 32, 32, 3))
        img = np.clip(patterns[y] + noise, 0, 255).astype(np.uint8)
        # torchvision stores (n, 3072) channel-major rows
        return {"data": img.transpose(0, 3, 1, 2).reshape(len(y), 3072),
                "labels": [int(v) for v in y]}

    y_train = np.tile(np.arange(NUM_CLASSES), n_train // NUM_CLASSES + 1)[:n_train]
    rng.shuffle(y_train)
    y_test = np.arange(n_test) % NUM_CLASSES
    folder = Path(root) / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(y_train, 5), 1):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(part)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(y_test)))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"class{i}" for i in range(NUM_CLASSES)]}))
    return y_train.astype(np.int64)


_ALLOWED_ROOTS: list = []
_TV_ORIGINALS: dict = {}


def _allow_synthetic(root: str) -> None:
    """Let torchvision's CIFAR loader accept the (checksum-less) files under ``root``."""
    import torchvision.datasets.cifar as tv_cifar
    root = os.path.abspath(root)
    if root not in _ALLOWED_ROOTS:
        _ALLOWED_ROOTS.append(root)
    if _TV_ORIGINALS:
        return
    check, download = tv_cifar.check_integrity, tv_cifar.download_and_extract_archive
    _TV_ORIGINALS.update(check_integrity=check, download_and_extract_archive=download)

    def _under(path) -> bool:
        p = os.path.abspath(str(path))
        return any(p == r or p.startswith(r + os.sep) for r in _ALLOWED_ROOTS)

    def check_integrity(fpath, md5=None):
        return os.path.isfile(fpath) if _under(fpath) else check(fpath, md5)

    def download_and_extract_archive(url, download_root, *a, **kw):
        if _under(download_root):
            raise RuntimeError(f"gpu_check: synthetic data under {download_root} is incomplete "
                               "(torchvision tried to download CIFAR-10)")
        return download(url, download_root, *a, **kw)

    tv_cifar.check_integrity = check_integrity
    tv_cifar.download_and_extract_archive = download_and_extract_archive


def _revert_synthetic() -> None:
    import torchvision.datasets.cifar as tv_cifar
    for name, fn in _TV_ORIGINALS.items():
        setattr(tv_cifar, name, fn)
    _TV_ORIGINALS.clear()
    _ALLOWED_ROOTS.clear()


def _hook_base():
    from semilearn.core.hooks import Hook
    return Hook


def synthetic_access_hook(root):
    """A do-nothing USB hook carrying :func:`_allow_synthetic` into ``mp.spawn``'s processes
    (it runs when the hook is built and again when a rank unpickles it)."""
    return _synthetic_access_class()(root)


def __getattr__(name):  # the hook classes are built on first use (semilearn imports slowly);
    # pickle finds them here in a spawned rank
    if name == "SyntheticCifarAccess":
        return _synthetic_access_class()
    if name == "DeviceCheckHook":
        return _device_check_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _synthetic_access_class():
    if "SyntheticCifarAccess" not in globals():
        Hook = _hook_base()

        class SyntheticCifarAccess(Hook):
            """Lets torchvision read the synthetic CIFAR-10 files under ``root``."""

            def __init__(self, root):
                self.root = str(root)
                _allow_synthetic(self.root)

            def __setstate__(self, state):
                self.__dict__.update(state)
                _allow_synthetic(self.root)

        SyntheticCifarAccess.__qualname__ = "SyntheticCifarAccess"
        globals()["SyntheticCifarAccess"] = SyntheticCifarAccess
    return globals()["SyntheticCifarAccess"]


# --------------------------------------------------------------------------- the device check
def _device_check_class():
    if "DeviceCheckHook" in globals():
        return globals()["DeviceCheckHook"]
    import torch
    Hook = _hook_base()

    class DeviceCheckHook(Hook):
        """Records where the tensors of the first ``check_steps`` training steps live (see
        the module docstring) and the wall time of every step; writes
        ``<save_dir>/<save_name>/device_check_rank<r>.json`` after the run.

        Parameters
        ----------
        expected : {'cuda', 'cpu'}
            The device type every tensor must have.
        check_steps : int
            Steps whose tensors are inspected (the later ones are only timed).
        """

        def __init__(self, expected: str, check_steps: int = 3):
            self.expected = str(expected)
            self.check_steps = int(check_steps)

        # -- recording
        def _see(self, where: str, obj):
            if isinstance(obj, torch.Tensor):
                self.checked += 1
                if obj.device.type != self.expected:
                    self.off.append(f"{where}: {obj.device}")
            elif isinstance(obj, dict):
                for k, v in obj.items():
                    self._see(f"{where}.{k}", v)
            elif isinstance(obj, (list, tuple)):
                for i, v in enumerate(obj):
                    self._see(f"{where}[{i}]", v)

        def _inspecting(self) -> bool:
            return self.phase != "train_step" or self.steps_seen < self.check_steps

        def before_run(self, algorithm):
            self.checked, self.off, self.step_s, self.phase = 0, [], [], "other"
            self.steps_seen, self.forwards = 0, {"train_step": 0, "evaluate": 0,
                                                 "pool_refresh": 0}
            self.first_it = int(algorithm.it)
            self.model_type = type(algorithm.model).__name__
            self._sync = torch.cuda.synchronize if self.expected == "cuda" else (lambda: None)
            for name in ("model", "ema_model"):
                net = getattr(algorithm, name)
                net = getattr(net, "module", net)

                def pre(module, args, kwargs, name=name):
                    if self.phase in self.forwards:
                        self.forwards[self.phase] += 1
                    if self._inspecting():
                        self._see(f"{self.phase}:{name}.forward", (list(args), kwargs))
                net.register_forward_pre_hook(pre, with_kwargs=True)

            step = algorithm.train_step

            @functools.wraps(step)  # USB's process_batch reads train_step's parameter names
            def train_step(**kw):
                self.phase = "train_step"
                try:
                    if self._inspecting():
                        self._see("train_step.batch", kw)
                    out, log = step(**kw)
                    if self._inspecting():
                        self._see("train_step.out", out)
                    return out, log
                finally:
                    self.phase = "other"
            algorithm.train_step = train_step

            for attr, phase in (("evaluate", "evaluate"), ("extract_pool_features", "pool_refresh")):
                fn = getattr(algorithm, attr, None)
                if fn is None:
                    continue

                def wrapped(*a, _fn=fn, _phase=phase, **kw):
                    old, self.phase = self.phase, _phase
                    try:
                        return _fn(*a, **kw)
                    finally:
                        self.phase = old
                setattr(algorithm, attr, wrapped)

            prior = algorithm.hooks_dict.get("DistAlignHook")
            if prior is not None and hasattr(prior, "posterior"):
                inner = prior.posterior

                def posterior(probs, idx_ulb, prior_ulb=None):
                    out = inner(probs, idx_ulb, prior_ulb)
                    if self._inspecting():
                        self._see("prior.posterior", [probs, idx_ulb, prior_ulb, out])
                        self._see("prior.rows", prior.batch_prior(idx_ulb, prior_ulb, probs.device))
                        if getattr(prior, "_table_dev", None) is not None:
                            self._see("prior.table", prior._table_dev)
                    return out
                prior.posterior = posterior

        def before_train_step(self, algorithm):
            self._sync()
            self._t0 = time.perf_counter()

        def after_train_step(self, algorithm):
            self._sync()
            self.step_s.append(time.perf_counter() - self._t0)
            if self.steps_seen < self.check_steps:
                for name in ("model", "ema_model"):
                    for pname, p in getattr(algorithm, name).named_parameters():
                        self._see(f"{name}.{pname}", p)
                    for bname, b in getattr(algorithm, name).named_buffers():
                        self._see(f"{name}.{bname}", b)
                for st in algorithm.optimizer.state.values():
                    self._see("optimizer.state", dict(st))
                mask = algorithm.hooks_dict.get("MaskingHook")
                for attr in ("classwise_acc", "selected_label"):
                    if mask is not None and isinstance(getattr(mask, attr, None), torch.Tensor):
                        self._see(f"MaskingHook.{attr}", getattr(mask, attr))
            self.steps_seen += 1

        def after_run(self, algorithm):
            import torch.distributed as dist
            rank = dist.get_rank() if dist.is_initialized() else 0
            rec = {"rank": rank, "world_size": dist.get_world_size() if dist.is_initialized() else 1,
                   "expected": self.expected, "model_type": self.model_type,
                   "first_it": self.first_it, "steps": self.steps_seen, "step_s": self.step_s,
                   "checked": self.checked, "off_device": self.off[:20],
                   "n_off_device": len(self.off), "forwards": self.forwards}
            path = Path(algorithm.save_dir) / algorithm.save_name / f"device_check_rank{rank}.json"
            path.write_text(json.dumps(rec))

    DeviceCheckHook.__qualname__ = "DeviceCheckHook"
    globals()["DeviceCheckHook"] = DeviceCheckHook
    return DeviceCheckHook


def read_device_checks(run_dir) -> list:
    """The ``device_check_rank*.json`` records of a run folder, by rank."""
    return [json.loads(p.read_text()) for p in sorted(Path(run_dir).glob("device_check_rank*.json"))]


def _median_step(recs, skip: int) -> float:
    times = [t for r in recs for t in r["step_s"][skip:]] or [t for r in recs for t in r["step_s"]]
    return float(np.median(times)) if times else float("nan")


# --------------------------------------------------------------------------- the stages
def _snapshot_hook(at: int, dst):
    """A hook copying ``latest_model.pth`` when iteration ``at`` ends (the resume point)."""
    Hook = _hook_base()

    class Snapshot(Hook):
        def after_train_step(self, algorithm):
            if algorithm.it + 1 == at:
                src = Path(algorithm.save_dir) / algorithm.save_name / "latest_model.pth"
                shutil.copy(src, dst)
    return Snapshot()


def usb_config(size: dict, ctx: dict, algorithm: str) -> dict:
    """USB config keys of one training (CIFAR-10's recipe, sizes from ``size``)."""
    iters = size["iters"]
    cuda = ctx["device"].type == "cuda"
    cfg = dict(
        algorithm=algorithm, save_dir=str(ctx["out"] / "usb"), save_name=algorithm,
        resume=False, load_path=None, overwrite=True, use_tensorboard=False, use_wandb=False,
        epoch=2, num_train_iter=iters, num_eval_iter=iters // 2, num_log_iter=max(1, iters // 4),
        num_labels=ctx["budget"], batch_size=size["batch_size"],
        eval_batch_size=size["eval_batch_size"], hard_label=True, T=0.5, thresh_warmup=True,
        p_cutoff=0.95, ulb_loss_ratio=1.0, uratio=size["uratio"], ema_m=0.999, crop_ratio=0.875,
        img_size=32, optim="SGD", lr=0.03, momentum=0.9, weight_decay=5e-4, layer_decay=1.0,
        amp=cuda, clip_grad=0.0, use_cat=True, net="wrn_28_2", net_from_name=False,
        data_dir=str(ctx["data"]), dataset="cifar10", train_sampler="RandomSampler",
        num_classes=NUM_CLASSES, num_workers=size["num_workers"], seed=0, world_size=1,
        rank=0, multiprocessing_distributed=False, dist_url="tcp://127.0.0.1:10007",
        dist_backend="nccl" if cuda else "gloo",
        gpu=(ctx["device"].index or 0) if cuda else "cpu",
        lb_index_file=str(ctx["lb_file"]))
    if algorithm == "as3l_flexmatch":
        cfg.update(prior_file=str(ctx["prior_file"]), prior_T=iters // 2, prior_mode="update",
                   prior_update_interval=max(1, iters // 4), prior_update_ks=[10, 20],
                   use_pretrain=True, pretrain_path=str(ctx["backbone"]))
    return cfg


def _train(size, ctx, algorithm, save_name, hooks=(), **overrides):
    from ..usb.train import train
    cfg = usb_config(size, ctx, algorithm)
    cfg["save_name"] = save_name
    cfg.update(overrides)
    check = _device_check_class()(ctx["device"].type, size["check_steps"])
    hooks = [(check, "LOWEST"), synthetic_access_hook(ctx["data"]), *hooks]
    res = train(cfg, hooks=hooks, shared=True)
    return res, read_device_checks(res["save_dir"])


def _device_note(recs) -> tuple:
    checked = sum(r["checked"] for r in recs)
    off = sum(r["n_off_device"] for r in recs)
    ok = bool(recs) and checked > 0 and off == 0 and all(r["forwards"]["train_step"] > 0
                                                           for r in recs)
    return ok, {"checked": checked, "off_device": off,
                "examples": [e for r in recs for e in r["off_device"]][:5],
                "forwards": [r["forwards"] for r in recs]}


def stage_data(size, ctx):
    ctx["y"] = write_synthetic_cifar10(ctx["data"], size["n_train"], size["n_test"])
    _allow_synthetic(str(ctx["data"]))
    return {"n_train": size["n_train"], "n_test": size["n_test"], "path": str(ctx["data"] / "cifar10")}


def stage_pretrain(size, ctx):
    from ..datasets import load_dataset
    from ..features.pretrain import SimSiamPretrainer
    ds = load_dataset("cifar10", str(ctx["data"]))
    ctx["ds"] = ds
    steps_per_epoch = size["n_train"] // size["pretrain_batch"]
    epochs = max(1, math.ceil(size["pretrain_steps"] / steps_per_epoch))
    cuda = ctx["device"].type == "cuda"
    tr = SimSiamPretrainer(net="wrn_28_2", epochs=epochs, batch_size=size["pretrain_batch"],
                           device=str(ctx["device"]), amp=cuda, progress=ctx["progress"],
                           objective="simsiam")
    tr.fit(ds, ctx["out"] / "pretrain")
    ctx["backbone"] = tr.backbone_path_
    return {"steps": epochs * steps_per_epoch, "epochs": epochs, "amp": cuda,
            "loss": round(tr.history_[-1]["loss"], 4), "z_std": round(tr.history_[-1]["z_std"], 3)}


def stage_features(size, ctx):
    from ..features.extract import extract_features
    X = extract_features(ctx["backbone"], ctx["ds"], device=str(ctx["device"]),
                         progress=ctx["progress"])
    ctx["X"] = X
    return {"shape": list(X.shape), "dtype": str(X.dtype)}


def stage_select(size, ctx):
    from ..selection import get_sampler
    ctx["budget"] = size["per_class"] * NUM_CLASSES
    idx = get_sampler("as3l", device=str(ctx["device"])).select(ctx["X"], ctx["budget"], seed=0)
    ctx["lb"] = np.asarray(idx, np.int64)
    ctx["lb_file"] = ctx["out"] / "lb_idx.npy"
    np.save(ctx["lb_file"], ctx["lb"])
    return {"budget": ctx["budget"], "classes_hit": int(len(np.unique(ctx["y"][ctx["lb"]])))}


def stage_propagate(size, ctx):
    from ..metrics import prior_accuracy
    from ..propagation import get_propagator
    P = get_propagator("seeded_kmeans", device=str(ctx["device"])).propagate(
        ctx["X"], ctx["lb"], ctx["y"][ctx["lb"]], NUM_CLASSES, seed=0)
    ctx["prior_file"] = ctx["out"] / "prior.npy"
    np.save(ctx["prior_file"], np.asarray(P, np.float32))
    return {"shape": list(P.shape), "prior_acc": round(float(prior_accuracy(P, ctx["y"])), 4)}


def stage_train_as3l(size, ctx):
    snap = ctx["out"] / "as3l_half.pth"
    res, recs = _train(size, ctx, "as3l_flexmatch", "as3l_flexmatch",
                       hooks=[(_snapshot_hook(size["iters"] // 2, snap), "LOWEST")])
    ok, note = _device_note(recs)
    ctx["as3l_steps"], ctx["as3l_res"], ctx["snap"] = recs, res, snap
    refresh = sum(f["pool_refresh"] for f in note["forwards"])
    return {"ok": ok and refresh > 0, "final_it": res["final_it"], "final_acc": res["final_acc"],
            "device_check": note, "pool_refresh_forwards": refresh,
            "median_step_s": _median_step(recs, ctx["warmup"])}


def stage_resume(size, ctx):
    import torch
    res, recs = _train(size, ctx, "as3l_flexmatch", "as3l_resumed", resume=True,
                       load_path=str(ctx["snap"]))
    ok, note = _device_note(recs)
    A = torch.load(Path(ctx["as3l_res"]["save_dir"]) / "latest_model.pth", map_location="cpu",
                   weights_only=False)
    B = torch.load(Path(res["save_dir"]) / "latest_model.pth", map_location="cpu",
                   weights_only=False)
    diff = max(float((a.float() - B["model"][k].float()).abs().max())
               for k, a in A["model"].items() if a.is_floating_point())
    start = recs[0]["first_it"] if recs else None
    return {"ok": ok and start == size["iters"] // 2 and res["final_it"] == size["iters"],
            "resumed_at": start, "final_it": res["final_it"],
            "max_abs_weight_diff_vs_uninterrupted": diff, "device_check": note}


def stage_train_flexmatch(size, ctx):
    res, recs = _train(size, ctx, "flexmatch", "flexmatch")
    ok, note = _device_note(recs)
    ctx["flex_steps"] = recs
    return {"ok": ok, "final_it": res["final_it"], "final_acc": res["final_acc"],
            "device_check": note, "median_step_s": _median_step(recs, ctx["warmup"])}


def stage_ddp_1proc(size, ctx):
    """The rank ``mp.spawn`` would start for world size 1, run in this process."""
    from ..usb.train import _free_port, get_config, main_worker
    cuda = ctx["device"].type == "cuda"
    cfg = usb_config(size, ctx, "as3l_flexmatch")
    cfg.update(save_name="ddp_1proc", num_train_iter=size["ddp_iters"],
               num_eval_iter=size["ddp_iters"], num_log_iter=size["ddp_iters"],
               multiprocessing_distributed=True, world_size=1, rank=0,
               dist_url=f"tcp://127.0.0.1:{_free_port()}")
    args = get_config(cfg, shared=True)
    args.distributed = True
    args.cpu_procs_per_node = 1
    save = Path(args.save_dir) / args.save_name
    shutil.rmtree(save, ignore_errors=True)
    check = _device_check_class()(ctx["device"].type, size["check_steps"])
    main_worker(args.gpu if cuda else None, 1, args, ((check, "LOWEST"),))
    recs = read_device_checks(save)
    ok, note = _device_note(recs)
    ddp = [r["model_type"] for r in recs]
    backend = args.dist_backend
    return {"ok": ok and ddp == ["DistributedDataParallel"], "backend": backend,
            "world_size": recs[0]["world_size"] if recs else None, "model": ddp,
            "device_check": note}


def stage_ddp_2proc(size, ctx):
    import torch
    if ctx["device"].type != "cuda" or torch.cuda.device_count() < 2:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"skipped": f"needs 2 CUDA devices, this machine has {n}"}
    res, recs = _train(size, ctx, "as3l_flexmatch", "ddp_2proc", gpu=None,
                       multiprocessing_distributed=True, num_train_iter=size["ddp_iters"],
                       num_eval_iter=size["ddp_iters"], num_log_iter=size["ddp_iters"])
    ok, note = _device_note(recs)
    return {"ok": ok and len(recs) == torch.cuda.device_count()
            and all(r["model_type"] == "DistributedDataParallel" for r in recs),
            "world_size": len(recs), "backend": "nccl", "device_check": note}


def stage_clustering(size, ctx):
    from ..clustering import kmeans
    n, d, K, iters = size["cluster_n"], size["cluster_d"], 100, 10
    X = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
    if ctx["device"].type == "cuda":
        import torch
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = kmeans(X, K, seed=0, max_iter=iters, tol=0.0, inertia_tol=0.0,
                 device=str(ctx["device"]), fit_rows=None)
    t = time.perf_counter() - t0
    it = int(res.n_iter)
    return {"shape": [n, d], "K": K, "n_iter": it, "seconds": round(t, 3),
            "rows_iter_per_s": n * it / t, "gemm_gflops": 2.0 * n * d * K * it / t / 1e9}


STAGES = (
    ("data", stage_data, ()),
    ("pretrain", stage_pretrain, ("data",)),
    ("features", stage_features, ("pretrain",)),
    ("select", stage_select, ("features",)),
    ("propagate", stage_propagate, ("select",)),
    ("train_as3l", stage_train_as3l, ("propagate",)),
    ("resume", stage_resume, ("train_as3l",)),
    ("train_flexmatch", stage_train_flexmatch, ("select",)),
    ("ddp_1proc", stage_ddp_1proc, ("propagate",)),
    ("ddp_2proc", stage_ddp_2proc, ("propagate",)),
    ("clustering", stage_clustering, ()),
)
STAGE_NAMES = tuple(s[0] for s in STAGES)


# --------------------------------------------------------------------------- driver
def _environment(device) -> dict:
    import torch
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda_build": torch.version.cuda, "device": str(device),
           "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_count"] = torch.cuda.device_count()
    try:
        import semilearn
        env["semilearn"] = getattr(semilearn, "__version__", "?")
    except ImportError:  # pragma: no cover
        pass
    return env


def run_check(device="cuda", out="gpu_check", *, tiny=False, progress=True, log=print) -> dict:
    """Run every stage; returns the report dict (also written to ``out``).

    Raises
    ------
    ParameterError
        ``device`` is not a device this machine has (e.g. ``cuda`` without CUDA).
    """
    from ..validate import check_device
    dev = check_device(device)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create {out} ({exc})", field="out") from None
    import as3l_plugin.usb  # noqa: F401  (registers as3l_flexmatch, the shims)
    from ..usb.compat import quiet_semilearn_warnings
    quiet_semilearn_warnings()
    size = SIZES["tiny" if tiny else "full"]
    ctx = {"device": dev, "out": out, "data": out / "data", "progress": progress,
           "warmup": 1 if tiny else 10}
    report = {"mode": "tiny" if tiny else "full", "sizes": size, "env": _environment(dev),
              "stages": {}, "time_budget_s": TIME_BUDGET_S}
    t_all = time.perf_counter()
    try:
        for name, fn, needs in STAGES:
            failed = [n for n in needs if report["stages"].get(n, {}).get("status") != "ok"]
            if failed:
                report["stages"][name] = {"status": "skipped", "seconds": 0.0,
                                          "note": f"needs {', '.join(failed)}"}
                log(f"[gpu_check] {name}: skipped (needs {', '.join(failed)})")
                continue
            log(f"[gpu_check] {name} ...")
            t0 = time.perf_counter()
            try:
                info = fn(size, ctx) or {}
                status = "skipped" if "skipped" in info else (
                    "ok" if info.pop("ok", True) else "failed")
            except Exception as exc:  # a stage's failure is a finding, the others still run
                info = {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:500],
                        "traceback": traceback.format_exc()[-2000:]}
                status = "failed"
            info.update(status=status, seconds=round(time.perf_counter() - t0, 3))
            report["stages"][name] = info
            log(f"[gpu_check] {name}: {status} ({info['seconds']:.1f} s)")
    finally:
        _revert_synthetic()
    report["total_s"] = round(time.perf_counter() - t_all, 3)
    a, f = (report["stages"].get(k, {}).get("median_step_s") for k in ("train_as3l",
                                                                       "train_flexmatch"))
    report["ratio_as3l_over_flexmatch"] = (a / f) if a and f else None
    checks = [s["device_check"] for s in report["stages"].values() if "device_check" in s]
    report["train_step_tensors_on_device"] = {
        "passed": bool(checks) and all(c["off_device"] == 0 and c["checked"] > 0 for c in checks),
        "checked": sum(c["checked"] for c in checks),
        "off_device": sum(c["off_device"] for c in checks)}
    report["passed"] = all(s["status"] in ("ok", "skipped") for s in report["stages"].values())
    text = format_report(report)
    from ..io import atomic_write_json, atomic_write_text
    atomic_write_json(out / "gpu_check.json", report)
    atomic_write_text(out / "gpu_check.txt", text)
    return report


def format_report(report: dict) -> str:
    """The text table of a report."""
    env = report["env"]
    lines = [f"gpu_check ({report['mode']}) on {env['device']}"
             + (f" [{env['gpu']}]" if env.get("gpu") else "")
             + f", torch {env['torch']} (CUDA build {env['cuda_build']})",
             f"{'stage':<16} {'status':<8} {'seconds':>9}  note"]
    for name, s in report["stages"].items():
        note = s.get("error") or s.get("note") or s.get("skipped") or ""
        if not note:
            keys = ("final_it", "final_acc", "resumed_at", "median_step_s", "backend",
                    "world_size", "steps", "loss", "shape", "budget", "prior_acc",
                    "gemm_gflops", "rows_iter_per_s")
            parts = []
            for k in keys:
                if k in s and s[k] is not None:
                    v = s[k]
                    parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
            note = " ".join(parts)
        lines.append(f"{name:<16} {s['status']:<8} {s['seconds']:>9.2f}  {note}")
    r = report["ratio_as3l_over_flexmatch"]
    lines.append(f"per-iteration ratio as3l_flexmatch / flexmatch (median step): "
                 f"{'n/a' if r is None else f'{r:.3f}'}")
    c = report["stages"].get("clustering", {})
    if c.get("status") == "ok":
        lines.append(f"clustering kmeans {c['shape'][0]} x {c['shape'][1]}, K=100, "
                     f"{c['n_iter']} iterations: {c['seconds']:.2f} s, "
                     f"{c['rows_iter_per_s']:.3g} rows*iter/s, {c['gemm_gflops']:.1f} GFLOP/s")
    d = report["train_step_tensors_on_device"]
    lines.append(f"device check train_step_tensors_on_device: "
                 f"{'PASS' if d['passed'] else 'FAIL'} ({d['checked']} tensors, "
                 f"{d['off_device']} off {env['device']})")
    lines.append(f"total {report['total_s']:.1f} s (budget {report['time_budget_s']:.0f} s on "
                 f"one GPU); overall {'PASS' if report['passed'] else 'FAIL'}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m as3l_plugin.benchmarks.gpu_check",
        description="Run the AS3L path (synthetic CIFAR-10 -> SimSiam WRN-28-2 -> features -> "
                    "as3l select -> seeded_kmeans prior -> as3l_flexmatch and flexmatch "
                    "through the plugin's USB entry, resume, DDP, clustering at 1M x 128) on "
                    "one device; report per-stage times and check every tensor of the "
                    "training step lived on the device.")
    p.add_argument("--device", default="cuda", help="torch device: cuda, cuda:N or cpu "
                                                    "(default cuda)")
    p.add_argument("--out", default="gpu_check", type=Path,
                   help="output folder: gpu_check.json, gpu_check.txt, the runs (default "
                        "./gpu_check)")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes (200 images, a handful of steps, 20k x 128 clustering): "
                        "the test-suite mode")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run_check(args.device, args.out, tiny=args.tiny, progress=not args.quiet,
                           log=(lambda *a: None) if args.quiet else
                           (lambda m: print(m, file=sys.stderr, flush=True)))
    except AS3LError as exc:
        print(f"gpu_check: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(format_report(report), end="")
    return 0 if report["passed"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
