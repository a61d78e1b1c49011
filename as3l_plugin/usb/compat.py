"""Every runtime shim the plugin applies to USB (semilearn 0.3.2), in one place.

Nothing here edits site-packages; each shim is small, named, tested
(``tests/test_usb_compat.py``) and, where it patches a module attribute, reversible
(:func:`revert`). :func:`apply` is called by ``import as3l_plugin.usb``.

Shims
-----
1. **nets** — :func:`register_nets`: the plugin's backbones (``cnn4``, ``cnn4_rgb``) become
   attributes of ``semilearn.nets``, so ``net: cnn4`` works through ``get_net_builder``.
2. **dataset dispatch** — :func:`install_dataset_dispatch`: ``semilearn.core.algorithmbase``
   looks ``get_dataset`` up in its module globals; that one name is replaced by
   :func:`get_dataset`, which builds the plugin's datasets (``digits``, ``fashion_mnist``,
   :mod:`as3l_plugin.usb.datasets`) and otherwise calls USB's own ``get_dataset`` inside (3).
3. **split injection** — :func:`split_injection`: while USB's dataset functions run,
   ``split_ssl_data`` / ``sample_labeled_unlabeled_data`` (as imported by ``cifar``,
   ``svhn``, ``stl10``…) are replaced by versions that (a) take the labeled indices from
   ``lb_index_file`` when set (validated: integer, in range, unique, ``len == num_labels``),
   (b) otherwise call USB's random split but write its index files under
   ``<save_dir>/<save_name>/usb_split/`` instead of site-packages, and (c) record which
   original row every labeled/unlabeled item came from (``orig_index``, used to align a
   prior). Scoped to the call: the originals are back when it returns.
4. **device** — :class:`DevicePlugin`, mixed into the algorithm class by
   :func:`plugin_algorithm` (the plugin's entry builds every algorithm through it). On a CUDA
   device every method defers to USB. On CPU (no CUDA, or ``gpu: cpu``):
   ``process_batch`` / ``evaluate`` / algorithm ``load_model`` hand USB tensors whose
   ``.cuda()`` is a no-op (:class:`CpuTensor`), so USB's own code runs unchanged;
   ``TimerHook`` / ``ParamUpdateHook`` (CUDA events, ``torch.cuda.synchronize``) are swapped
   for wall-clock versions; ``ngpus_per_node`` is the number of CPU processes.
   :func:`send_model` replaces ``send_model_cuda`` (CPU: plain model, or DDP on gloo).
5. **checkpoint extras** — :class:`DevicePlugin` adds the RNG states (python, numpy, torch,
   CUDA) and the training-time counter to every checkpoint and restores them on load, so a
   run resumed from a checkpoint taken at an epoch end continues bit for bit; checkpoints
   are written atomically (temp file + fsync + rename), in progress order: ``metrics.csv``,
   then ``model_best.pth``, then ``latest_model.pth`` (what a resume continues from) last.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
import warnings
from types import SimpleNamespace

import numpy as np
import torch

from ..artifacts import load_lb_index  # noqa: F401 (the index reader; also used below)
from ..errors import ConfigError

_ORIGINALS: dict = {}


# --------------------------------------------------------------------------- 1. nets
def register_nets() -> list:
    """Make the plugin's backbones available as ``semilearn.nets.<name>``.

    Returns the registered names. Raises :class:`ConfigError` if semilearn already has a
    different object under one of the names (nothing is overwritten silently).
    """
    import semilearn.nets as snets

    from ..nets import NETS
    for name, builder in NETS.items():
        current = getattr(snets, name, None)
        if current is not None and current is not builder:
            raise ConfigError(f"semilearn.nets already defines {name!r}; the plugin will not "
                              "replace it", field="net")
        setattr(snets, name, builder)
    return sorted(NETS)


def unregister_nets() -> None:
    import semilearn.nets as snets

    from ..nets import NETS
    for name, builder in NETS.items():
        if getattr(snets, name, None) is builder:
            delattr(snets, name)


# --------------------------------------------------------------------------- 3. split
class SplitRecord(SimpleNamespace):
    """What :func:`split_injection` saw: ``kind`` ('split' | 'sample' | None), ``n`` (pool
    size), ``lb`` / ``ulb`` (int64 indices into the pool), ``data`` / ``targets``."""


def _usb_split_dir(args) -> str:
    return os.path.join(str(getattr(args, "save_dir", ".")), str(getattr(args, "save_name", "run")),
                        "usb_split")


@contextlib.contextmanager
def split_injection(args, lb_index_file=None):
    """Scope in which USB's dataset builders use the plugin's split functions (shim 3).

    Yields a :class:`SplitRecord` filled by the first call.
    """
    import semilearn.datasets.utils as dutils
    orig_split = _ORIGINALS.get("split_ssl_data", dutils.split_ssl_data)
    orig_sample = _ORIGINALS.get("sample_labeled_unlabeled_data", dutils.sample_labeled_unlabeled_data)
    rec = SplitRecord(kind=None, n=None, lb=None, ulb=None, data=None, targets=None)

    @contextlib.contextmanager
    def _usb_dump_dir():
        old = dutils.base_dir
        dutils.base_dir = _usb_split_dir(args)
        try:
            yield
        finally:
            dutils.base_dir = old

    def _lb_ulb(args_, data, target, *sample_args, load_exist):
        """The index file's labeled set and its complement, else USB's own draw (its split
        files written under the run folder, not site-packages)."""
        if lb_index_file:
            lb = load_lb_index(lb_index_file, n_samples=len(data), num_labels=args.num_labels)
            return lb, np.setdiff1d(np.arange(len(data)), lb)
        with _usb_dump_dir():
            return orig_sample(args_, data, target, *sample_args, load_exist=load_exist)

    def sample_labeled_unlabeled_data(args_, data, target, num_classes, lb_num_labels,
                                      ulb_num_labels=None, lb_imbalance_ratio=1.0,
                                      ulb_imbalance_ratio=1.0, load_exist=True):
        lb, ulb = _lb_ulb(args_, data, target, num_classes, lb_num_labels, ulb_num_labels,
                          lb_imbalance_ratio, ulb_imbalance_ratio, load_exist=load_exist)
        if rec.kind is None:
            rec.kind, rec.n, rec.lb, rec.ulb = "sample", len(data), np.asarray(lb, np.int64), None
            rec.data, rec.targets = data, np.asarray(target)
        return lb, ulb

    def split_ssl_data(args_, data, targets, num_classes, lb_num_labels, ulb_num_labels=None,
                       lb_imbalance_ratio=1.0, ulb_imbalance_ratio=1.0, lb_index=None,
                       ulb_index=None, include_lb_to_ulb=True, load_exist=True):
        data, targets = np.array(data), np.array(targets)
        lb, ulb = _lb_ulb(args_, data, targets, num_classes, lb_num_labels, ulb_num_labels,
                          lb_imbalance_ratio, ulb_imbalance_ratio, load_exist=False)
        if lb_index is not None:  # USB's debug override, kept
            lb = lb_index
        if ulb_index is not None:
            ulb = ulb_index
        lb, ulb = np.asarray(lb, np.int64), np.asarray(ulb, np.int64)
        if include_lb_to_ulb:
            ulb = np.concatenate([lb, ulb])
        if rec.kind is None:
            rec.kind, rec.n, rec.lb, rec.ulb = "split", len(data), lb, ulb
            rec.data, rec.targets = data, targets
        return data[lb], targets[lb], data[ulb], targets[ulb]

    patched = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("semilearn.datasets.") or mod is None or mod is dutils:
            continue
        if getattr(mod, "split_ssl_data", None) is orig_split:
            patched.append((mod, "split_ssl_data", orig_split))
            mod.split_ssl_data = split_ssl_data
        if getattr(mod, "sample_labeled_unlabeled_data", None) is orig_sample:
            patched.append((mod, "sample_labeled_unlabeled_data", orig_sample))
            mod.sample_labeled_unlabeled_data = sample_labeled_unlabeled_data
    try:
        yield rec
    finally:
        for mod, attr, orig in patched:
            setattr(mod, attr, orig)


def _annotate(dset_dict, rec: SplitRecord, *, algorithm: str, include_lb_to_ulb: bool,
              lb_index_file) -> None:
    """Attach ``orig_index`` / ``orig_len`` to USB's datasets from what the split saw."""
    lb_dset, ulb_dset = dset_dict.get("train_lb"), dset_dict.get("train_ulb")
    if rec.kind == "split":
        n, lb_orig, ulb_orig = rec.n, rec.lb, rec.ulb
    elif rec.kind == "sample":  # stl10: ulb = [lb?] + unlabeled split + labeled ("train") split
        m = len(rec.lb) if include_lb_to_ulb else 0
        n = len(ulb_dset) - m if ulb_dset is not None else rec.n
        offset = n - rec.n
        lb_orig = offset + rec.lb
        ulb_orig = np.concatenate([lb_orig, np.arange(n)]) if include_lb_to_ulb else np.arange(n)
    else:
        return
    supervised = algorithm in ("fullysupervised", "supervised")
    if supervised and lb_index_file and lb_dset is not None and rec.kind == "split":
        # USB replaces the labeled set by the whole train split for fully-supervised runs;
        # with an index file, train on exactly the listed samples.
        lb_dset.data, lb_dset.targets = rec.data[rec.lb], rec.targets[rec.lb]
    if lb_dset is not None:
        if len(lb_dset) == len(lb_orig):
            lb_dset.orig_index = np.asarray(lb_orig, np.int64)
        elif supervised and len(lb_dset) == n:
            lb_dset.orig_index = np.arange(n)
        lb_dset.orig_len = n
    if ulb_dset is not None and len(ulb_dset) == len(ulb_orig):
        ulb_dset.orig_index = np.asarray(ulb_orig, np.int64)
        ulb_dset.orig_len = n


# --------------------------------------------------------------------------- 2. datasets
def get_dataset(args, algorithm, dataset, num_labels, num_classes, data_dir="./data",
                include_lb_to_ulb=True):
    """Drop-in for ``semilearn.core.utils.get_dataset`` (same signature and return value).

    The plugin's datasets are built by :mod:`as3l_plugin.usb.datasets`; USB's own run inside
    :func:`split_injection`. Both honour ``args.lb_index_file`` and annotate the returned
    datasets with ``orig_index`` (int64, the original row of every item) and ``orig_len``.
    """
    from .datasets import PLUGIN_DATASETS, build_plugin_dataset
    lb_file = getattr(args, "lb_index_file", None) or None
    if dataset in PLUGIN_DATASETS:
        return build_plugin_dataset(args, algorithm, dataset, num_labels, num_classes,
                                    data_dir=data_dir, include_lb_to_ulb=include_lb_to_ulb,
                                    lb_index_file=lb_file)
    usb_get_dataset = _ORIGINALS.get("get_dataset")
    if usb_get_dataset is None:
        from semilearn.core.utils import build
        usb_get_dataset = build.get_dataset
    with split_injection(args, lb_file) as rec:
        dset_dict = usb_get_dataset(args, algorithm, dataset, num_labels, num_classes,
                                    data_dir, include_lb_to_ulb)
    if dset_dict is None:
        return None
    if lb_file and rec.kind is None:
        raise ConfigError(f"dataset {dataset!r} does not use USB's split functions, so "
                          "lb_index_file cannot be applied to it; supported: digits, "
                          "fashion_mnist, cifar10, cifar100, svhn, stl10 (and other "
                          "split_ssl_data datasets)", field="lb_index_file")
    _annotate(dset_dict, rec, algorithm=algorithm, include_lb_to_ulb=include_lb_to_ulb,
              lb_index_file=lb_file)
    return dset_dict


def install_dataset_dispatch() -> None:
    """Shim 2: route ``semilearn.core.algorithmbase.get_dataset`` through :func:`get_dataset`."""
    import semilearn.core.algorithmbase as ab
    if ab.get_dataset is not get_dataset:
        _ORIGINALS.setdefault("get_dataset", ab.get_dataset)
        ab.get_dataset = get_dataset


def uninstall_dataset_dispatch() -> None:
    import semilearn.core.algorithmbase as ab
    if "get_dataset" in _ORIGINALS:
        ab.get_dataset = _ORIGINALS.pop("get_dataset")


# --------------------------------------------------------------------------- 4. device
class CpuTensor(torch.Tensor):
    """A tensor whose ``.cuda()`` returns itself as a plain tensor on its current device.

    Handed to USB code that hard-codes ``x.cuda(self.gpu)`` when the run is on CPU.
    """

    def cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        return self.as_subclass(torch.Tensor)


def as_cpu_tensors(obj):
    """Tensors (also inside a top-level dict) → :class:`CpuTensor`; anything else unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.as_subclass(CpuTensor)
    if isinstance(obj, dict):
        return type(obj)((k, as_cpu_tensors(v)) if isinstance(v, torch.Tensor) else (k, v)
                         for k, v in obj.items())
    return obj


class _CpuLoader:
    """Iterates a DataLoader, yielding batches whose tensors are :class:`CpuTensor`."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            yield {k: as_cpu_tensors(v) for k, v in batch.items()} if isinstance(batch, dict) else batch

    def __len__(self):
        return len(self.loader)


def resolve_device(args) -> torch.device:
    """The run's device: CPU with ``gpu: cpu``, or ``gpu: None`` without CUDA; else USB's
    CUDA choice. A GPU id (``gpu: 0``) without CUDA, or past ``torch.cuda.device_count()``,
    is a :class:`ConfigError` (field ``gpu``): asking for a GPU never falls back to the CPU."""
    gpu = getattr(args, "gpu", None)
    if isinstance(gpu, str) and gpu.strip().lower() in ("none", "null", ""):
        gpu = None
    if isinstance(gpu, str) and gpu.strip().lower() == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if gpu is None:
            return torch.device("cpu")
        raise ConfigError(f"gpu={gpu!r} asks for CUDA but torch.cuda.is_available() is False; "
                          "set gpu: cpu (or None: CUDA when present, else CPU)", field="gpu")
    if gpu is not None and not 0 <= int(gpu) < torch.cuda.device_count():
        raise ConfigError(f"gpu={gpu!r} but this machine has {torch.cuda.device_count()} CUDA "
                          "device(s)", field="gpu")
    return torch.device("cuda") if gpu is None else torch.device("cuda", int(gpu))


def _wall_hooks():
    from semilearn.core.hooks import Hook, ParamUpdateHook

    class WallTimerHook(Hook):
        """TimerHook without CUDA events: ``train/prefetch_time`` by wall clock."""

        def before_run(self, algorithm):
            self._t = time.perf_counter()

        def before_train_step(self, algorithm):
            self._fetched = time.perf_counter()

        def after_train_step(self, algorithm):
            algorithm.log_dict["lr"] = algorithm.optimizer.param_groups[-1]["lr"]
            algorithm.log_dict["train/prefetch_time"] = self._fetched - self._t
            self._t = time.perf_counter()

    class WallParamUpdateHook(ParamUpdateHook):
        """ParamUpdateHook without ``torch.cuda.synchronize``: ``train/run_time`` by wall clock."""

        def before_train_step(self, algorithm):
            self._t0 = time.perf_counter()

        def after_train_step(self, algorithm):
            super().after_train_step(algorithm)
            algorithm.log_dict["train/run_time"] = time.perf_counter() - self._t0

    return WallTimerHook, WallParamUpdateHook


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as types ``torch.load(weights_only=True)``
    accepts (tuples of ints, tensors)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.as_tensor(state["torch"]).as_subclass(torch.Tensor))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(t).as_subclass(torch.Tensor) for t in state["cuda"]])


class DevicePlugin:
    """Mixin placed first in the MRO of every algorithm the plugin's entry builds.

    Attributes added: ``device`` (torch.device), ``train_time_`` (seconds of training so far,
    excluding evaluation and checkpoint writing; carried across resumes), ``cpu_bf16_``
    (CPU only: whether the training step runs under bfloat16 autocast, from the config's
    ``cpu_bf16``: true, false or auto, see :mod:`as3l_plugin.precision`).
    """

    def __init__(self, args, net_builder, tb_log=None, logger=None, **kwargs):
        self.device = resolve_device(args)
        self.train_time_ = 0.0
        self._clock_start = None
        self._excluded_time = 0.0
        super().__init__(args, net_builder, tb_log, logger, **kwargs)
        if self.device.type != "cuda":
            self.gpu = None
            self.ngpus_per_node = max(1, int(getattr(args, "cpu_procs_per_node", 1) or 1))
            self._cpu_speedups(args)

    def _cpu_speedups(self, args):
        """CPU training step: channels-last weights (oneDNN's fast convolution layout) and,
        when ``cpu_bf16`` says so, bfloat16 autocast of the forward pass through USB's own
        ``amp_cm`` hook (no gradient scaler; USB's ``amp`` keeps its CUDA meaning)."""
        from ..precision import autocast_factory, use_cpu_bf16
        self.cpu_bf16_ = use_cpu_bf16(getattr(args, "cpu_bf16", "auto"), self.device)
        if self.cpu_bf16_:
            self.amp_cm = autocast_factory(True)
        for m in (self.model, self.ema_model):
            if m is not None:
                m.to(memory_format=torch.channels_last)

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    # -- training clock
    def train(self):
        self._clock_start, self._excluded_time = time.perf_counter(), 0.0
        return super().train()

    def elapsed_train_time(self) -> float:
        """Seconds spent training (this run and the runs it resumed), without evaluation and
        checkpoint writing."""
        if self._clock_start is None:
            return self.train_time_
        return self.train_time_ + (time.perf_counter() - self._clock_start) - self._excluded_time

    # -- hooks
    def _replace_hook(self, name, hook):
        for i, old in enumerate(self._hooks):
            if old.name == name:
                hook.priority, hook.name = old.priority, old.name
                self._hooks[i] = hook
                self.hooks_dict[name] = hook
                return
        raise KeyError(name)

    def set_hooks(self):
        super().set_hooks()
        if not self.on_cuda:
            timer, update = _wall_hooks()
            self._replace_hook("TimerHook", timer())
            self._replace_hook("ParamUpdateHook", update())
        from .hooks import MetricsCSVHook, ProgressLastCheckpointHook
        if "CheckpointHook" in self.hooks_dict:
            self._replace_hook("CheckpointHook", ProgressLastCheckpointHook())
        metrics = MetricsCSVHook()
        self.register_hook(metrics, "MetricsCSVHook", "HIGH")
        # metrics.csv before the checkpoint: a kill between the two writes loses no row (the
        # resumed run re-evaluates from the previous checkpoint and replaces later rows)
        if "CheckpointHook" in self.hooks_dict:
            self._hooks.remove(metrics)
            at = next(i for i, h in enumerate(self._hooks) if h.name == "CheckpointHook")
            self._hooks.insert(at, metrics)
            self.hooks_dict = type(self.hooks_dict)((h.name, h) for h in self._hooks)

    # -- batches and evaluation
    def process_batch(self, input_args=None, **kwargs):
        if not self.on_cuda:
            kwargs = {k: as_cpu_tensors(v) for k, v in kwargs.items()}
        return super().process_batch(input_args, **kwargs)

    def evaluate(self, eval_dest="eval", out_key="logits", return_logits=False):
        t0 = time.perf_counter()
        try:
            if self.on_cuda:
                return super().evaluate(eval_dest, out_key, return_logits)
            loader = self.loader_dict[eval_dest]
            self.loader_dict[eval_dest] = _CpuLoader(loader)
            try:
                return super().evaluate(eval_dest, out_key, return_logits)
            finally:
                self.loader_dict[eval_dest] = loader
        finally:
            self._excluded_time += time.perf_counter() - t0

    def save_model(self, save_name, save_path):
        """USB's ``save_model``, written atomically (temp file, fsync, rename): a run killed
        while saving keeps its previous checkpoint instead of a torn one."""
        t0 = time.perf_counter()
        try:
            os.makedirs(save_path, exist_ok=True)
            final = os.path.join(save_path, save_name)
            tmp = f"{final}.tmp{os.getpid()}"
            try:
                with open(tmp, "wb") as fh:
                    torch.save(self.get_save_dict(), fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            self.print_fn(f"model saved: {final}")
        finally:
            self._excluded_time += time.perf_counter() - t0

    # -- 5. checkpoint extras
    def get_save_dict(self):
        save_dict = super().get_save_dict()
        save_dict["as3l_rng"] = rng_state()
        save_dict["as3l_train_time"] = float(self.elapsed_train_time())
        return save_dict

    def load_model(self, load_path):
        checkpoint = super().load_model(load_path)
        if checkpoint.get("as3l_rng") is not None:
            set_rng_state(checkpoint["as3l_rng"])
        self.train_time_ = float(checkpoint.get("as3l_train_time", 0.0))
        return checkpoint


def _checkpoint_tail():
    from semilearn.core import AlgorithmBase

    class CheckpointDevice(AlgorithmBase):
        """Sits between an algorithm and AlgorithmBase: on CPU the checkpoint an algorithm's
        ``load_model`` receives holds :class:`CpuTensor` values, so its ``.cuda()`` calls
        (FlexMatch, FreeMatch, SoftMatch…) keep the state on CPU."""

        def load_model(self, load_path):
            checkpoint = super().load_model(load_path)
            if getattr(self, "device", None) is not None and self.device.type != "cuda":
                return as_cpu_tensors(checkpoint)
            return checkpoint

    return CheckpointDevice


_PLUGIN_CLASSES: dict = {}


def plugin_algorithm(*bases) -> type:
    """The class the plugin's entry instantiates for ``bases`` (an algorithm class, or an
    imbalanced class followed by its base algorithm): ``DevicePlugin`` first, USB's classes,
    then the checkpoint shim just above ``AlgorithmBase``. Cached per ``bases``."""
    key = tuple(bases)
    if key not in _PLUGIN_CLASSES:
        name = "Plugin" + "".join(b.__name__ for b in bases)
        _PLUGIN_CLASSES[key] = type(name, (DevicePlugin, *bases, _checkpoint_tail()),
                                    {"__module__": __name__, "__doc__": bases[0].__doc__})
    return _PLUGIN_CLASSES[key]


def send_model(args, model, device: torch.device, clip_batch: bool = True):
    """USB's ``send_model_cuda`` on CUDA; on CPU the model itself, or DDP (gloo) when
    distributed (batch size divided by processes per node, as USB does per GPU)."""
    if device.type == "cuda":
        from semilearn.core.utils import send_model_cuda
        return send_model_cuda(args, model, clip_batch=clip_batch)
    model = model.to(device)
    if getattr(args, "distributed", False):
        if clip_batch:
            procs = max(1, int(getattr(args, "cpu_procs_per_node", 1) or 1))
            args.batch_size = int(args.batch_size / procs)
        model = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False,
                                                          find_unused_parameters=True)
    return model


# --------------------------------------------------------------------------- apply / revert
_APPLIED = False


def apply() -> None:
    """Apply the global shims (1, 2). Idempotent. Shims 3–5 are scoped / per class."""
    global _APPLIED
    import semilearn.datasets.utils as dutils
    _ORIGINALS.setdefault("split_ssl_data", dutils.split_ssl_data)
    _ORIGINALS.setdefault("sample_labeled_unlabeled_data", dutils.sample_labeled_unlabeled_data)
    register_nets()
    install_dataset_dispatch()
    _APPLIED = True


def revert() -> None:
    """Undo :func:`apply` (the nets and the dataset dispatch)."""
    global _APPLIED
    unregister_nets()
    uninstall_dataset_dispatch()
    _APPLIED = False


def is_applied() -> bool:
    return _APPLIED


def quiet_semilearn_warnings() -> None:
    """Silence the deprecation chatter semilearn 0.3.2 triggers on import with torch 2.x."""
    for msg in (r".*torch\.cuda\.amp\..*", r"Importing from timm\..*",
                r".*GradScaler is enabled, but CUDA is not available.*"):
        warnings.filterwarnings("ignore", message=msg)
