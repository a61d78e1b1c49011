"""``as3l_flexmatch``: FlexMatch guided by a prior pseudo-label (AS3L, Sec. 3.4).

Registered in semilearn's ``ALGORITHMS`` on import. Compared with FlexMatch only the
pseudo-label source changes: while the prior is active the weak-view probabilities are
replaced by ``y_posterior = normalize(y_prior + p_weak)`` (Eq. 5) before FlexMatch's
class-wise threshold mask and hard pseudo-label (Eq. 4). See :class:`~.hooks.PriorHook`
for the schedule (``prior_T``, ``prior_mode``).

Config keys (also command-line flags)
-------------------------------------
``prior_file`` (str, required)
    ``.npy`` float32 ``(n, num_classes)``, rows sum to 1, in the pool's original order
    (:mod:`as3l_plugin.usb.prior_data`). Checked at start-up.
``prior_T`` (int >= 0, default 6900)
    Change point: the prior is mixed for iterations 1..T.
``prior_mode`` (``remove`` | ``update``, default ``remove``)
    After T: ``remove`` = plain FlexMatch; ``update`` = keep mixing a prior recomputed
    every ``prior_update_interval`` iterations from the model's current features.
``prior_update_interval`` (int >= 1, default 6900)
``prior_update_ks`` (list of int >= 2, default ``[10, 20, 30, 40, 50, 60]``; the CLI
    takes ``10,20,30``)
``prior_update_features`` (``extract`` | ``bank``, default ``extract``)
    Where a refresh takes the pool's features from: ``extract`` = a forward pass of the
    EMA model over the whole pool; ``bank`` = the weak-view features the training steps
    computed (training model; kept per pool row, saved in checkpoints), with only the rows
    never seen extracted. ``bank`` needs a single process (world_size 1).
"""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from semilearn.algorithms.flexmatch import FlexMatch
from semilearn.algorithms.utils import SSL_Argument
from semilearn.core.utils import ALGORITHMS

from ..errors import ConfigError
from ..validate import check_int
from .prior_data import PriorDataset, load_prior
from .hooks import PRIOR_MODES, PRIOR_UPDATE_FEATURES, PriorHook, check_bank_world

DEFAULT_KS = (10, 20, 30, 40, 50, 60)


def int_list(value) -> list:
    """``'10,20,30'`` / ``[10, 20]`` / ``10`` → list of int (argparse type of prior_update_ks)."""
    if isinstance(value, str):
        parts = [p for p in value.replace("[", "").replace("]", "").replace(" ", "").split(",") if p]
        return [int(p) for p in parts]
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def check_prior_args(args) -> SimpleNamespace:
    """Validate the ``prior_*`` keys of ``args``; returns them normalised.

    Raises
    ------
    ConfigError
        Missing/nonexistent ``prior_file``, unknown ``prior_mode``, ``prior_T < 0``,
        ``prior_update_interval < 1``, ``prior_update_ks`` not a list of ints >= 2,
        unknown ``prior_update_features``, ``bank`` with ``world_size > 1``.
    """
    path = getattr(args, "prior_file", None)
    if path in (None, "", "None"):
        raise ConfigError("is required for as3l_flexmatch (the prior .npy made by `as3l prior`)",
                          field="prior_file")
    if not os.path.isfile(str(path)):
        raise ConfigError("file not found", path=path, field="prior_file")
    mode = str(getattr(args, "prior_mode", "remove"))
    if mode not in PRIOR_MODES:
        raise ConfigError(f"={mode!r} is not a mode; use one of {', '.join(PRIOR_MODES)}",
                          field="prior_mode")
    T = check_int(getattr(args, "prior_T", 6900), "prior_T", low=0, error=ConfigError,
                  named=False, loose=True)
    interval = check_int(getattr(args, "prior_update_interval", 6900), "prior_update_interval",
                         low=1, error=ConfigError, named=False, loose=True)
    try:
        ks = int_list(getattr(args, "prior_update_ks", DEFAULT_KS))
    except (TypeError, ValueError):
        raise ConfigError(f"expected a list of integers, got {getattr(args, 'prior_update_ks')!r}",
                          field="prior_update_ks") from None
    if not ks or min(ks) < 2:
        raise ConfigError(f"={ks} must be a non-empty list of integers >= 2", field="prior_update_ks")
    features = str(getattr(args, "prior_update_features", "extract"))
    if features not in PRIOR_UPDATE_FEATURES:
        raise ConfigError(f"={features!r} is not a feature source; use one of "
                          f"{', '.join(PRIOR_UPDATE_FEATURES)}", field="prior_update_features")
    check_bank_world(features, getattr(args, "world_size", 1))
    return SimpleNamespace(file=str(path), mode=mode, T=T, interval=interval, ks=tuple(ks),
                           features=features)


class _PoolDataset(torch.utils.data.Dataset):
    """Every original row of the pool once, evaluation transform: item = (row, image)."""

    def __init__(self, sources, n, transform):
        self.src = np.full(n, -1, np.int64)
        self.pos = np.zeros(n, np.int64)
        self.datas = []
        for s, (data, orig_index) in enumerate(sources):
            orig_index = np.asarray(orig_index, np.int64)
            fill = self.src[orig_index] < 0
            self.src[orig_index[fill]] = s
            self.pos[orig_index[fill]] = np.flatnonzero(fill)
            self.datas.append(data)
        self.transform = transform

    @property
    def missing(self) -> int:
        return int((self.src < 0).sum())

    def __len__(self):
        return len(self.src)

    def __getitem__(self, row):
        from PIL import Image
        img = self.datas[self.src[row]][self.pos[row]]
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        return self.transform(img)


@ALGORITHMS.register("as3l_flexmatch")
class AS3LFlexMatch(FlexMatch):
    """FlexMatch whose pseudo-label is ``normalize(prior + p_weak)`` while the prior is active.

    Extra state: the :class:`~.hooks.PriorHook` (``hooks_dict['DistAlignHook']``), saved in
    checkpoints as ``as3l_prior`` and restored by :meth:`load_model`.
    """

    def __init__(self, args, net_builder, tb_log=None, logger=None):
        self.prior_cfg = check_prior_args(args)
        super().__init__(args, net_builder, tb_log, logger)

    # -- data: the unlabeled items carry their prior
    def set_dataset(self):
        dset = super().set_dataset()
        if dset is None:
            return dset
        ulb = dset["train_ulb"]
        if getattr(ulb, "orig_index", None) is None:
            raise ConfigError(f"cannot align a prior with dataset {self.args.dataset!r}: build it "
                              "through the plugin (import as3l_plugin.usb before semilearn builds "
                              "datasets; supported: digits, fashion_mnist and USB datasets split "
                              "by split_ssl_data, plus stl10)", field="dataset")
        prior = load_prior(self.prior_cfg.file, n_samples=ulb.orig_len, num_classes=self.num_classes)
        dset["train_ulb"] = PriorDataset(ulb, prior, ulb.orig_index)
        return dset

    @property
    def prior_hook(self) -> PriorHook:
        return self.hooks_dict["DistAlignHook"]

    def set_hooks(self):
        if "DistAlignHook" in getattr(self, "hooks_dict", {}):
            raise ConfigError("as3l_flexmatch uses FlexMatch's distribution-alignment slot for the "
                              "prior; it cannot be combined with an algorithm that registers its own "
                              "DistAlignHook", field="imb_algorithm")
        ulb, lb = self.dataset_dict["train_ulb"], self.dataset_dict["train_lb"]
        cfg = self.prior_cfg
        hook = PriorHook(ulb.prior, ulb.orig_index, T=cfg.T, mode=cfg.mode,
                         update_interval=cfg.interval, update_ks=cfg.ks,
                         labeled_index=getattr(lb, "orig_index", None),
                         labeled_targets=np.asarray(lb.targets), seed=int(self.args.seed or 0),
                         features=cfg.features)
        hook.check_shape(self.args.ulb_dest_len, self.num_classes)
        if cfg.mode == "update" and hook.labeled_index is None:
            raise ConfigError("prior_mode=update needs the labeled set's original rows",
                              field="prior_mode")
        self.register_hook(hook, "DistAlignHook")
        super().set_hooks()

    # -- the one change to FlexMatch: the pseudo-label source
    def train_step(self, x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s, prior_ulb=None):
        hook = self.prior_hook
        hook.set_batch(idx_ulb, prior_ulb)
        try:
            out_dict, log_dict = super().train_step(x_lb, y_lb, idx_ulb, x_ulb_w, x_ulb_s)
        finally:
            hook.set_batch(None)
        if hook.uses_bank:  # the weak view's features, already computed by the step
            hook.record_features(idx_ulb, out_dict["feat"]["x_ulb_w"], self.it)
        log_dict["train/prior_active"] = float(hook.is_active(self.it))
        return out_dict, log_dict

    # -- mode 'update': features of the whole pool
    @torch.no_grad()
    def extract_pool_features(self, rows=None) -> np.ndarray:
        """Features (``only_feat``) of every pool row with the EMA model in eval mode.

        ``rows`` (optional, int array): only these pool rows, in this order (the rows a
        ``bank`` refresh has no feature for).

        The batches go to the device the EMA model's weights are on (the run's device,
        ``self.device``: CUDA with ``gpu`` set and CUDA present); only the features come
        back to the CPU. The forward pass runs in ``self.amp_cm()``, the context of the
        training step (USB's CUDA ``amp``, or the plugin's CPU bfloat16 autocast when
        ``cpu_bf16`` is on), so the refresh uses the training precision. Returns float32
        ``(n, d)`` in the pool's original order (``(len(rows), d)`` with ``rows``).
        """
        lb, ulb = self.dataset_dict["train_lb"], self.dataset_dict["train_ulb"]
        ulb_base = getattr(ulb, "base", ulb)
        pool = _PoolDataset([(ulb_base.data, ulb.orig_index), (lb.data, lb.orig_index)],
                            ulb.orig_len, self.dataset_dict["eval"].transform)
        if pool.missing:
            raise ConfigError(f"{pool.missing} pool rows are in neither the labeled nor the "
                              "unlabeled set; prior_mode=update cannot re-cluster them",
                              field="prior_mode")
        model = getattr(self.ema_model, "module", self.ema_model)
        data = pool if rows is None else torch.utils.data.Subset(
            pool, np.asarray(rows, np.int64).tolist())
        if len(data) == 0:
            return np.zeros((0, int(getattr(model, "num_features", 0))), np.float32)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        loader = torch.utils.data.DataLoader(data, batch_size=int(self.args.eval_batch_size),
                                             shuffle=False, num_workers=int(self.args.num_workers))
        feats = []
        try:
            for x in loader:
                with self.amp_cm():
                    f = model(x.to(device, non_blocking=True), only_feat=True)
                feats.append(f.float().cpu())
        finally:
            model.train(was_training)
        return torch.cat(feats).numpy()

    # -- checkpoints
    def get_save_dict(self):
        save_dict = super().get_save_dict()
        save_dict["as3l_prior"] = self.prior_hook.state_dict()
        return save_dict

    def load_model(self, load_path):
        checkpoint = super().load_model(load_path)
        state = checkpoint.get("as3l_prior")
        if state is None:
            warnings.warn(f"{load_path}: no as3l_prior state (not an as3l_flexmatch checkpoint); "
                          "keeping the prior from prior_file", stacklevel=2)
        else:
            self.prior_hook.load_state_dict(state)
        return checkpoint

    @staticmethod
    def get_argument():
        return FlexMatch.get_argument() + [
            SSL_Argument("--prior_file", str, None, "prior .npy (n, num_classes), rows sum to 1"),
            SSL_Argument("--prior_T", int, 6900, "iterations during which the prior is mixed in"),
            SSL_Argument("--prior_mode", str, "remove", "after prior_T: remove | update"),
            SSL_Argument("--prior_update_interval", int, 6900, "iterations between refreshes (update)"),
            SSL_Argument("--prior_update_ks", int_list, list(DEFAULT_KS),
                         "K values of the refresh propagation, e.g. 10,20,30"),
            SSL_Argument("--prior_update_features", str, "extract",
                         "refresh features: extract (forward pass over the pool) | bank "
                         "(the training steps' weak-view features; single process)"),
        ]
