"""SimSiam pretraining loop: batched tensor augmentation, per-epoch atomic checkpoints, resume.

Files in ``out`` (the run directory)
------------------------------------
``checkpoint.pth``
    Written atomically after every epoch: SimSiam model (backbone + heads), optimizer,
    completed epochs, loss history, configuration and RNG state. A run started again with the
    same configuration continues after the last completed epoch; because epoch ``e`` draws
    its permutation and augmentations from a generator seeded by ``(seed, e)``, a resumed run
    reproduces an uninterrupted one.
``backbone.pth``
    The encoder for USB (see :mod:`as3l_plugin.features.backbone`), written when training ends.

Optimisation follows SimSiam's CIFAR recipe: SGD (momentum 0.9, weight decay 5e-4),
``lr = base_lr * batch_size / 256`` with ``base_lr = 0.06``, cosine decay per step to 0; the
predictor keeps the initial learning rate (SimSiam's ``--fix-pred-lr``, which the paper
reports as slightly better).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..errors import OutputError, ParameterError, StaleInputError, TrainingError

CHECKPOINT_FORMAT = "as3l-simsiam-checkpoint/1"

#: per-dataset defaults of the CLI / pipeline (chosen by the measurements in the README)
PRETRAIN_DEFAULTS = {
    "digits": {"epochs": 40, "batch_size": 128, "lr": 0.06, "image_size": None,
               "objective": "simsiam"},
    "fashion_mnist": {"epochs": 30, "batch_size": 256, "lr": 0.06, "image_size": 16,
                      "objective": "vicreg"},
}
_FALLBACK_DEFAULTS = {"epochs": 200, "batch_size": 256, "lr": 0.06, "image_size": None,
                      "objective": "simsiam"}


def pretrain_defaults(dataset: str) -> Dict[str, Any]:
    """Epochs, batch size, base lr, view size and objective used when the caller does not
    set them."""
    return dict(PRETRAIN_DEFAULTS.get(dataset, _FALLBACK_DEFAULTS))


def _dataset(dataset, data_dir):
    from ..datasets import ArrayDataset, load_dataset
    if isinstance(dataset, ArrayDataset):
        return dataset
    return load_dataset(dataset, data_dir)


def _check(name, value, ok, allowed):
    if not ok:
        raise ParameterError(f"{name}={value!r} must be {allowed}", field=name)


class InputPipeline:
    """uint8 image batches → normalised float tensors the backbone expects.

    Parameters
    ----------
    mean, std : tuple of float
        Per-channel normalisation of ``x / 255`` (one value for grayscale).
    net_channels : int
        Channels the backbone wants; grayscale images are repeated to 3 channels if needed.
    channels_last : bool
        Return channels-last tensors (the layout the CPU convolutions prefer; timings in the
        README, "Pretraining speed").
    """

    def __init__(self, mean, std, net_channels: int, channels_last: bool = True):
        import torch
        c = len(mean)
        if c not in (1, net_channels) or (c == 3 and net_channels == 1):
            raise ParameterError(f"images with {c} channels cannot feed a net with "
                                 f"{net_channels} input channels", field="net")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.net_channels = net_channels
        self.channels_last = channels_last

    def __call__(self, x_uint8, augment=None, generator=None, out_size=None):
        import torch
        from .augment import to_float_images
        x = to_float_images(x_uint8)
        if augment is not None:
            x = augment(x, generator, out_size)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        if x.shape[1] != self.net_channels:
            x = x.expand(-1, self.net_channels, -1, -1)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last
                            else torch.contiguous_format)


class SimSiamPretrainer:
    """Pretrain a USB backbone with SimSiam on a dataset's training images.

    Parameters
    ----------
    net : str, default 'cnn4'
        Backbone name (:func:`as3l_plugin.features.backbone.build_backbone`).
    epochs : int, default 100
    batch_size : int, default 256
        Pairs of views per step; ``drop_last``: an epoch has ``n // batch_size`` steps.
    base_lr : float, default 0.06
        ``lr = base_lr * batch_size / 256``.
    momentum : float, default 0.9
    weight_decay : float, default 5e-4
    fix_pred_lr : bool, default True
        Keep the predictor's learning rate constant (SimSiam).
    image_size : int, optional
        Side of the augmented views; default the dataset's. Smaller views train faster
        (cost ~ pixels); features are always extracted at the dataset's size.
    augment : callable, optional
        Batch augmentation; default :func:`as3l_plugin.features.augment.augmentation_for`.
    seed : int, default 0
    device : str or torch.device, default 'cpu'
        Where the model, the images and the augmentation run (``'cuda'``, ``'cuda:1'``...);
        a CUDA device on a machine without CUDA is a :class:`ParameterError`.
    num_threads : int, optional
        ``torch.set_num_threads`` for the run (CPU).
    channels_last : bool, default True
    compile : bool, default False
        ``torch.compile`` the model (pays off on GPUs, not on CPUs; see the speed benchmark).
    objective : {'simsiam', 'simclr', 'vicreg'}, default 'simsiam'
        Self-supervised loss and heads (:mod:`as3l_plugin.features.objectives`).
    temperature : float, default 0.5
        NT-Xent temperature (``objective='simclr'`` only).
    cpu_bf16 : bool or 'auto', default 'auto'
        bfloat16 autocast of the forward pass on a CPU (:mod:`as3l_plugin.precision`); not
        part of the resume check (a run may continue under the other setting).
    amp : bool, default False
        CUDA only: float16 autocast of the forward pass with a gradient scaler (USB's
        ``amp``); ``True`` with a CPU device is a :class:`ParameterError` (use ``cpu_bf16``).
        Not part of the resume check.
    snapshot_epochs : iterable of int, default ()
        Also write ``out/backbone_e{E}.pth`` after these epochs (for curves of feature
        quality against training time); the last epoch's is ``backbone.pth``.
    progress : bool, default True
        tqdm bar per epoch with the running loss.

    Attributes
    ----------
    backbone_ : nn.Module
        The trained encoder (CPU, eval mode).
    history_ : list of dict
        Per epoch: ``epoch``, ``loss``, ``z_std`` (std of l2-normalised projections times
        sqrt(dim); ~1 when healthy, ~0 when collapsed), ``lr``, ``seconds`` (wall) and
        ``cpu_seconds`` (process CPU time: the cost itself when other jobs share the CPU).
    start_epoch_ : int
        Epochs already done when :meth:`fit` started (``> 0`` after a resume).
    checkpoint_path_, backbone_path_ : Path
    """

    def __init__(self, *, net: str = "cnn4", epochs: int = 100, batch_size: int = 256,
                 base_lr: float = 0.06, momentum: float = 0.9, weight_decay: float = 5e-4,
                 fix_pred_lr: bool = True, image_size: Optional[int] = None, augment=None,
                 seed: int = 0, device: str = "cpu", num_threads: Optional[int] = None,
                 channels_last: bool = True, compile: bool = False, progress: bool = True,
                 objective: str = "simsiam", temperature: float = 0.5,
                 cpu_bf16="auto", snapshot_epochs=(), amp: bool = False):
        self.net = net
        self.epochs = epochs
        self.batch_size = batch_size
        self.base_lr = base_lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.fix_pred_lr = fix_pred_lr
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.device = device
        self.num_threads = num_threads
        self.channels_last = channels_last
        self.compile = compile
        self.progress = progress
        self.objective = objective
        self.temperature = temperature
        self.cpu_bf16 = cpu_bf16
        self.snapshot_epochs = snapshot_epochs
        self.amp = amp

    # ------------------------------------------------------------------ validation
    def _validate(self, n_train: int):
        _check("epochs", self.epochs, isinstance(self.epochs, int) and self.epochs >= 1, ">= 1")
        _check("batch_size", self.batch_size,
               isinstance(self.batch_size, int) and self.batch_size >= 2, "an int >= 2")
        if self.batch_size > n_train:
            raise ParameterError(f"batch_size={self.batch_size} > {n_train} training images; "
                                 "lower --batch-size", field="batch_size")
        for name in ("base_lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            _check(name, v, isinstance(v, (int, float)) and v >= 0 and math.isfinite(v),
                   "a finite float >= 0")
        _check("seed", self.seed, isinstance(self.seed, int) and self.seed >= 0, "an int >= 0")
        if self.image_size is not None:
            _check("image_size", self.image_size,
                   isinstance(self.image_size, int) and self.image_size >= 4, "an int >= 4")
        from ..precision import check_cpu_bf16
        from .objectives import check_objective
        check_objective(self.objective)
        _check("temperature", self.temperature, isinstance(self.temperature, (int, float))
               and 0 < self.temperature and math.isfinite(self.temperature), "a float > 0")
        check_cpu_bf16(self.cpu_bf16)
        from ..validate import check_device
        dev = check_device(self.device)
        if not isinstance(self.amp, bool):
            raise ParameterError(f"amp={self.amp!r} must be true or false", field="amp")
        if self.amp and dev.type != "cuda":
            raise ParameterError(f"amp=True needs a CUDA device (device={self.device!r}); on a "
                                 "CPU use cpu_bf16", field="amp")
        if self.num_threads is not None:
            _check("num_threads", self.num_threads,
                   isinstance(self.num_threads, int) and self.num_threads >= 1, "an int >= 1")

    def _config(self, ds, image_size, augment) -> Dict[str, Any]:
        aug = asdict(augment) if is_dataclass(augment) else repr(augment)
        # the objective's keys only when they differ from SimSiam's: checkpoints written
        # before objectives existed keep resuming
        extra = {} if self.objective == "simsiam" else {"objective": self.objective}
        if self.objective == "simclr":
            extra["temperature"] = self.temperature
        return {**extra, "net": self.net, "dataset": ds.name, "n_train": int(len(ds.y_train)),
                "epochs": self.epochs, "batch_size": self.batch_size, "base_lr": self.base_lr,
                "momentum": self.momentum, "weight_decay": self.weight_decay,
                "fix_pred_lr": self.fix_pred_lr, "image_size": image_size, "seed": self.seed,
                "augment": {"type": type(augment).__name__, "params": aug}}

    # ------------------------------------------------------------------ checkpoints
    def _resume(self, path: Path, config, model, optimizer):
        import torch

        from .backbone import load_torch_file
        if not path.is_file():
            return 0, []
        ckpt = load_torch_file(path, what="SimSiam checkpoint")
        old = ckpt.get("config", {})
        old_cmp = {k: v for k, v in old.items()}
        new_cmp = {k: v for k, v in config.items()}
        # tuples become lists after a round trip through some code paths: compare as text
        diff = [k for k in sorted(set(old_cmp) | set(new_cmp))
                if repr(old_cmp.get(k)).replace("(", "[").replace(")", "]")
                != repr(new_cmp.get(k)).replace("(", "[").replace(")", "]")]
        if diff:
            k = diff[0]
            raise StaleInputError(
                f"was made with {k}={old_cmp.get(k)!r}, this run has {k}={new_cmp.get(k)!r} "
                f"(differences: {', '.join(diff)}); use another --out or delete the directory "
                "to start over", path=path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "rng" in ckpt:
            torch.set_rng_state(ckpt["rng"]["torch"])
        return int(ckpt["epoch"]), list(ckpt.get("history", []))

    def _save_checkpoint(self, path, config, epoch, model, optimizer, history):
        import torch

        from ..io import atomic_write_bytes
        from .backbone import torch_bytes
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        opt = optimizer.state_dict()
        opt["state"] = {k: {n: (t.cpu() if torch.is_tensor(t) else t) for n, t in s.items()}
                        for k, s in opt["state"].items()}
        atomic_write_bytes(path, torch_bytes({
            "format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch, "model": state,
            "optimizer": opt, "history": history, "rng": {"torch": torch.get_rng_state()}}))

    def _write_backbone(self, path, backbone, ds, config, history):
        import torch

        from ..io import atomic_write_bytes
        from .backbone import BACKBONE_FORMAT, encoder_state, torch_bytes
        backbone = backbone.to("cpu").to(memory_format=torch.contiguous_format)
        atomic_write_bytes(path, torch_bytes({
            "model": encoder_state(backbone), "net": self.net, "dataset": ds.name,
            "format": BACKBONE_FORMAT, "num_features": int(backbone.num_features),
            "in_channels": int(ds.in_channels), "image_size": int(ds.image_size),
            "mean": tuple(ds.mean), "std": tuple(ds.std), "epochs": len(history),
            "loss": history[-1]["loss"] if history else None, "seed": self.seed,
            "config": config}))
        return backbone

    # ------------------------------------------------------------------ training
    def fit(self, dataset, out, *, data_dir=None,
            callback: Optional[Callable[[int, Dict[str, float]], None]] = None):
        """Train (or resume) and write ``out/checkpoint.pth`` and ``out/backbone.pth``.

        Parameters
        ----------
        dataset : str or ArrayDataset
            Name for :func:`as3l_plugin.datasets.load_dataset`, or a loaded dataset.
        out : str or Path
            Run directory (created if missing).
        data_dir : str, optional
            Passed to the dataset loader.
        callback : callable, optional
            ``callback(epoch, record)`` after every saved epoch (1-based ``epoch``).

        Returns
        -------
        self
        """
        import torch
        from tqdm.auto import tqdm

        from ..precision import autocast_factory, use_cpu_bf16
        from .augment import augmentation_for
        from .backbone import build_backbone, input_channels
        from .objectives import build_objective

        ds = _dataset(dataset, data_dir)
        n = len(ds.y_train)
        self._validate(n)
        out = Path(out)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output directory ({exc})", path=out) from exc
        image_size = self.image_size or ds.image_size
        augment = self.augment or augmentation_for(ds.name, ds.in_channels)
        config = self._config(ds, image_size, augment)
        old_threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            torch.manual_seed(self.seed)
            device = torch.device(self.device)
            backbone = build_backbone(self.net)
            model = build_objective(self.objective, backbone, fix_pred_lr=self.fix_pred_lr,
                                    temperature=self.temperature).to(device)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            pipe = InputPipeline(ds.mean, ds.std, input_channels(backbone), self.channels_last)
            if self.amp:  # CUDA float16 autocast + loss scaling, as USB's amp
                amp = lambda: torch.autocast("cuda", dtype=torch.float16)  # noqa: E731
            else:
                amp = autocast_factory(use_cpu_bf16(self.cpu_bf16, device))
            scaler = torch.amp.GradScaler("cuda", enabled=bool(self.amp))
            lr0 = self.base_lr * self.batch_size / 256
            optimizer = torch.optim.SGD(model.param_groups(), lr=lr0, momentum=self.momentum,
                                        weight_decay=self.weight_decay)
            self.checkpoint_path_ = out / "checkpoint.pth"
            self.backbone_path_ = out / "backbone.pth"
            start, history = self._resume(self.checkpoint_path_, config, model, optimizer)
            self.start_epoch_ = start
            step_fn = torch.compile(model) if self.compile else model
            images = torch.from_numpy(np.array(ds.x_train, copy=True)).to(device)
            steps = n // self.batch_size
            total = steps * self.epochs
            for epoch in range(start, self.epochs):
                t0, c0 = time.perf_counter(), time.process_time()
                g = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + epoch)
                perm = torch.randperm(n, generator=g, device=device)
                model.train()
                loss_sum = torch.zeros((), device=device)
                zstd_sum = torch.zeros((), device=device)
                bar = tqdm(range(steps), desc=f"{self.objective} {epoch + 1}/{self.epochs}",
                           disable=not self.progress, leave=False, dynamic_ncols=True)
                lr = lr0
                for i in bar:
                    lr = 0.5 * lr0 * (1 + math.cos(math.pi * (epoch * steps + i) / total))
                    for grp in optimizer.param_groups:
                        grp["lr"] = lr0 if grp["fix_lr"] else lr
                    xb = images[perm[i * self.batch_size:(i + 1) * self.batch_size]]
                    v1 = pipe(xb, augment, g, image_size)
                    v2 = pipe(xb, augment, g, image_size)
                    with amp():
                        loss, z1 = step_fn(v1, v2)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    with torch.no_grad():
                        loss_sum += loss.detach()
                        zn = torch.nn.functional.normalize(z1.detach().float(), dim=1)
                        zstd_sum += zn.std(dim=0).mean() * math.sqrt(zn.shape[1])
                    if self.progress and (i % 10 == 0 or i == steps - 1):
                        bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.4f}")
                bar.close()
                if not torch.isfinite(loss_sum):
                    raise TrainingError(f"SimSiam loss became {loss_sum.item()} in epoch "
                                        f"{epoch + 1}; lower --lr", field="base_lr")
                rec = {"epoch": epoch + 1, "loss": float(loss_sum) / steps,
                       "z_std": float(zstd_sum) / steps, "lr": lr,
                       "seconds": time.perf_counter() - t0,
                       "cpu_seconds": time.process_time() - c0}
                history.append(rec)
                self._save_checkpoint(self.checkpoint_path_, config, epoch + 1, model,
                                      optimizer, history)
                if self.progress:
                    tqdm.write(f"{self.objective} epoch {epoch + 1}/{self.epochs}: loss {rec['loss']:.4f}"
                               f"  z_std {rec['z_std']:.3f}  {rec['seconds']:.1f}s")
                if epoch + 1 in self.snapshot_epochs and epoch + 1 < self.epochs:
                    self._write_backbone(out / f"backbone_e{epoch + 1}.pth",
                                         copy.deepcopy(model.backbone), ds, config, history)
                if callback is not None:
                    callback(epoch + 1, rec)
            self.history_ = history
            if history and history[-1]["z_std"] < 0.1:
                warnings.warn(f"SimSiam collapsed (z_std={history[-1]['z_std']:.3f}; healthy "
                              "runs stay near 1): lower the learning rate or check the "
                              "augmentation", RuntimeWarning, stacklevel=2)
            self.backbone_ = self._write_backbone(self.backbone_path_, model.backbone, ds,
                                                  config, history).eval()
        finally:
            torch.set_num_threads(old_threads)
        return self


def pretrain_simsiam(dataset, net: str = "cnn4", *, out, epochs: Optional[int] = None,
                     batch_size: Optional[int] = None, lr: Optional[float] = None,
                     image_size: Optional[int] = None, objective: Optional[str] = None,
                     seed: int = 0, device: str = "cpu",
                     data_dir=None, num_threads: Optional[int] = None, progress: bool = True,
                     **kwargs) -> Path:
    """Pretrain ``net`` self-supervised on ``dataset``; returns the path of ``out/backbone.pth``.

    ``epochs``, ``batch_size``, ``lr`` (the base learning rate, scaled by
    ``batch_size / 256``), ``image_size`` and ``objective`` default to
    :func:`pretrain_defaults` of the dataset; other keyword arguments go to
    :class:`SimSiamPretrainer`. Re-running with the
    same arguments resumes an interrupted run after its last completed epoch.
    """
    name = dataset if isinstance(dataset, str) else getattr(dataset, "name", "")
    d = pretrain_defaults(name)
    trainer = SimSiamPretrainer(
        net=net, epochs=d["epochs"] if epochs is None else epochs,
        batch_size=d["batch_size"] if batch_size is None else batch_size,
        base_lr=d["lr"] if lr is None else lr,
        image_size=d["image_size"] if image_size is None else image_size,
        objective=d["objective"] if objective is None else objective,
        seed=seed, device=device, num_threads=num_threads, progress=progress, **kwargs)
    return trainer.fit(dataset, out, data_dir=data_dir).backbone_path_
