"""USB hooks of the plugin: the AS3L prior (:class:`PriorHook`), ``metrics.csv``
(:class:`MetricsCSVHook`) and the checkpoint order (:class:`ProgressLastCheckpointHook`)."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
import torch
from semilearn.core.hooks import CheckpointHook, Hook

from ..errors import PriorError

PRIOR_MODES = ("remove", "update")


class PriorHook(Hook):
    """Holds the prior ``y_prior`` and turns weak-view probabilities into ``y_posterior``.

    Sec. 3.4, Eq. 5: for iteration ``t <= T`` (1-based; USB's 0-based ``it < T``)
    ``y_posterior = normalize(y_prior + p_weak)``; afterwards mode ``remove`` returns
    ``p_weak`` (plain FlexMatch) and mode ``update`` keeps mixing a prior recomputed from
    the model's current features (seeded K-means propagation, same labeled set) before
    iteration ``it = T``, ``T + interval``, ``T + 2 * interval``…

    It sits in FlexMatch's distribution-alignment slot (registered as ``"DistAlignHook"``):
    FlexMatch passes the weak probabilities through ``dist_align`` before both its
    class-wise threshold mask and the hard pseudo-label, so both use ``y_posterior``.
    The slot has no ``idx_ulb``; :class:`as3l_plugin.usb.algorithm.AS3LFlexMatch` hands the
    batch's indices over with :meth:`set_batch`.

    Parameters
    ----------
    prior : array-like of float32, shape (n, C)
        Prior over the pool, original order.
    orig_index : array-like of int64, shape (L,)
        Original row of every unlabeled item; ``idx_ulb`` indexes this (L = ``ulb_dest_len``).
    T : int
        Change point (iterations), >= 0.
    mode : {'remove', 'update'}
    update_interval : int
        Iterations between refreshes in mode ``update``, >= 1.
    update_ks : sequence of int
        K values of the seeded K-means propagation used for refreshes.
    labeled_index, labeled_targets : array-like of int64, shape (m,)
        The labeled set (original rows and classes), kept for refreshes.
    seed : int
        Seed of the refresh propagation.
    propagate_fn : callable, optional
        ``propagate_fn(features, labeled_index, labels, num_classes, seed) -> (n, C)``;
        default: ``get_propagator('seeded_kmeans', ks=update_ks).propagate``.

    Attributes
    ----------
    prior_ : Tensor float32 (n, C), on CPU — the current prior.
    version_ : int — number of refreshes so far.
    last_update_it_ : int — iteration of the last refresh (-1 = never).
    """

    def __init__(self, prior, orig_index, *, T: int, mode: str = "remove",
                 update_interval: int = 6900, update_ks=(10, 20, 30, 40, 50, 60),
                 labeled_index=None, labeled_targets=None, seed: int = 0, propagate_fn=None):
        super().__init__()
        if mode not in PRIOR_MODES:
            raise ValueError(f"mode={mode!r}; expected one of {PRIOR_MODES}")
        self.T, self.mode = int(T), mode
        self.update_interval, self.update_ks = int(update_interval), tuple(int(k) for k in update_ks)
        self.seed = int(seed)
        self.labeled_index = None if labeled_index is None else np.asarray(labeled_index, np.int64)
        self.labeled_targets = None if labeled_targets is None else np.asarray(labeled_targets, np.int64)
        self.propagate_fn = propagate_fn
        self.orig_index = torch.as_tensor(np.asarray(orig_index, np.int64))
        self.version_, self.last_update_it_ = 0, -1
        self._batch = None
        self._set_prior(torch.as_tensor(np.asarray(prior, np.float32)))

    # -- state
    def _set_prior(self, prior: torch.Tensor) -> None:
        prior = prior.detach().to("cpu", torch.float32).contiguous()
        if prior.ndim != 2 or (hasattr(self, "prior_") and prior.shape != self.prior_.shape):
            raise PriorError(f"new prior has shape {tuple(prior.shape)}, expected "
                             f"{tuple(self.prior_.shape) if hasattr(self, 'prior_') else '(n, C)'}")
        if int(self.orig_index.max()) >= prior.shape[0]:
            raise PriorError(f"the unlabeled set points at row {int(self.orig_index.max())} but "
                             f"the prior has {prior.shape[0]} rows")
        self.prior_ = prior
        self._table = prior[self.orig_index]  # (L, C): row i = prior of unlabeled item i
        self._table_dev = None

    @property
    def table_shape(self) -> tuple:
        """``(ulb_dest_len, num_classes)``: shape of the per-item prior."""
        return tuple(self._table.shape)

    def check_shape(self, ulb_dest_len: int, num_classes: int) -> None:
        if self.table_shape != (int(ulb_dest_len), int(num_classes)):
            raise PriorError(f"prior per unlabeled item has shape {self.table_shape}, expected "
                             f"(ulb_dest_len={ulb_dest_len}, num_classes={num_classes})",
                             field="prior_file")

    def state_dict(self) -> dict:
        return {"prior": self.prior_.clone(), "mode": self.mode, "T": self.T,
                "version": self.version_, "last_update_it": self.last_update_it_}

    def load_state_dict(self, state: dict) -> None:
        prior = torch.as_tensor(state["prior"]).as_subclass(torch.Tensor)
        if tuple(prior.shape) != tuple(self.prior_.shape):
            raise PriorError(f"checkpoint prior has shape {tuple(prior.shape)}, this run's is "
                             f"{tuple(self.prior_.shape)}; resume with the same dataset and split")
        self._set_prior(prior)
        self.version_ = int(state.get("version", 0))
        self.last_update_it_ = int(state.get("last_update_it", -1))

    # -- schedule
    def is_active(self, it: int) -> bool:
        """Whether the prior enters the pseudo-label at 0-based iteration ``it``."""
        return self.mode == "update" or int(it) < self.T

    def refresh_due(self, it: int) -> bool:
        it = int(it)
        return (self.mode == "update" and it >= self.T and (it - self.T) % self.update_interval == 0
                and it != self.last_update_it_)

    # -- posterior
    def set_batch(self, idx_ulb=None, prior_ulb=None) -> None:
        """Hand over the current unlabeled batch (``None`` clears it)."""
        self._batch = None if idx_ulb is None else (idx_ulb, prior_ulb)

    def batch_prior(self, idx_ulb: torch.Tensor, prior_ulb=None, device=None) -> torch.Tensor:
        """Prior rows of a batch, ``(B, C)`` on ``device``: the batch's ``prior_ulb`` while the
        prior is still the file's (version 0), else a lookup by ``idx_ulb``."""
        device = idx_ulb.device if device is None else device
        if prior_ulb is not None and self.version_ == 0:
            return prior_ulb.to(device, torch.float32)
        if self._table_dev is None or self._table_dev.device != torch.device(device):
            self._table_dev = self._table.to(device)
        return self._table_dev[idx_ulb.to(device).long()]

    @torch.no_grad()
    def posterior(self, probs: torch.Tensor, idx_ulb: torch.Tensor, prior_ulb=None) -> torch.Tensor:
        """``normalize(prior[idx] + probs)``: float ``(B, C)``, rows sum to 1."""
        mixed = self.batch_prior(idx_ulb, prior_ulb, probs.device) + probs.float()
        return (mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(1e-12)).to(probs.dtype)

    @torch.no_grad()
    def dist_align(self, algorithm, probs_x_ulb, probs_x_lb=None):
        """FlexMatch's slot: ``y_posterior`` while the prior is active, else ``probs_x_ulb``."""
        if self._batch is None or not self.is_active(algorithm.it):
            return probs_x_ulb
        return self.posterior(probs_x_ulb, *self._batch)

    # -- refresh (mode 'update')
    def before_train_step(self, algorithm):
        if self.refresh_due(algorithm.it):
            self.refresh(algorithm)

    def _propagate(self, features, num_classes):
        if self.propagate_fn is not None:
            return self.propagate_fn(features, self.labeled_index, self.labeled_targets,
                                     num_classes, self.seed)
        from ..propagation import get_propagator
        return get_propagator("seeded_kmeans", ks=self.update_ks).propagate(
            features, self.labeled_index, self.labeled_targets, num_classes, seed=self.seed)

    def refresh(self, algorithm) -> None:
        """Recompute the prior from the model's current features (rank 0; broadcast under DDP)."""
        t0 = time.perf_counter()
        dist = torch.distributed
        ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        num_classes = self.prior_.shape[1]
        if not ddp or dist.get_rank() == 0:
            feats = algorithm.extract_pool_features()
            new = torch.as_tensor(np.asarray(self._propagate(feats, num_classes), np.float32))
            if tuple(new.shape) != tuple(self.prior_.shape):
                raise PriorError(f"propagation returned shape {tuple(new.shape)}, expected "
                                 f"{tuple(self.prior_.shape)}")
        else:
            new = torch.empty_like(self.prior_)
        if ddp:
            dev = next(algorithm.model.parameters()).device
            buf = new.to(dev)
            dist.broadcast(buf, src=0)
            new = buf.cpu()
        self._set_prior(new)
        self.version_ += 1
        self.last_update_it_ = int(algorithm.it)
        algorithm.print_fn(f"prior refreshed at iteration {algorithm.it} (version {self.version_}, "
                           f"{time.perf_counter() - t0:.2f} s)")
        self.last_refresh_time_ = time.perf_counter() - t0


METRICS_COLUMNS = ("iteration", "algorithm", "eval_acc", "eval_loss", "eval_balanced_acc",
                   "best_acc", "train_time_s", "wall_time_s", "lr")


class MetricsCSVHook(Hook):
    """Writes ``<save_dir>/<save_name>/metrics.csv`` after every evaluation (rank 0 only).

    Columns (:data:`METRICS_COLUMNS`): ``iteration`` (iterations done, 1-based like USB's
    log), ``algorithm``, ``eval_acc`` (top-1 on the eval set, EMA weights), ``eval_loss``,
    ``eval_balanced_acc``, ``best_acc``, ``train_time_s`` (training seconds so far without
    evaluation/checkpoint writing, continued across resumes), ``wall_time_s`` (seconds
    since the start, across resumes), ``lr``. The file is rewritten atomically each time; a
    resumed run keeps the rows up to its checkpoint's iteration.
    """

    def before_run(self, algorithm):
        args = algorithm.args
        self.path = os.path.join(algorithm.save_dir, algorithm.save_name, "metrics.csv")
        self.writer = (not algorithm.distributed) or algorithm.rank % algorithm.ngpus_per_node == 0
        self.rows = []
        if getattr(args, "resume", False) and os.path.isfile(self.path):
            with open(self.path, newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= algorithm.it]
        self._wall0 = time.perf_counter() - (float(self.rows[-1]["wall_time_s"]) if self.rows else 0.0)
        self.last_row = self.rows[-1] if self.rows else None

    def after_train_step(self, algorithm):
        if not (self.every_n_iters(algorithm, algorithm.num_eval_iter) or self.is_last_iter(algorithm)):
            return
        log = algorithm.log_dict
        if "eval/top-1-acc" not in log:
            return
        elapsed = getattr(algorithm, "elapsed_train_time", None)
        row = {
            "iteration": algorithm.it + 1, "algorithm": algorithm.algorithm,
            "eval_acc": f"{float(log['eval/top-1-acc']):.6f}",
            "eval_loss": f"{float(log.get('eval/loss', float('nan'))):.6f}",
            "eval_balanced_acc": f"{float(log.get('eval/balanced_acc', float('nan'))):.6f}",
            "best_acc": f"{float(algorithm.best_eval_acc):.6f}",
            "train_time_s": f"{elapsed():.3f}" if elapsed else "",
            "wall_time_s": f"{time.perf_counter() - self._wall0:.3f}",
            "lr": f"{float(algorithm.optimizer.param_groups[-1]['lr']):.6g}",
        }
        self.rows.append(row)
        self.last_row = row
        if self.writer:
            from ..io import atomic_write_csv
            atomic_write_csv(self.path, METRICS_COLUMNS,
                             [[r[c] for c in METRICS_COLUMNS] for r in self.rows])


class ProgressLastCheckpointHook(CheckpointHook):
    """USB's ``CheckpointHook`` writing ``model_best.pth`` *before* ``latest_model.pth``.

    ``latest_model.pth`` is what a resumed run continues from, so it is written last (like a
    sidecar): a run killed between the two writes resumes from the previous checkpoint and
    rewrites both, instead of continuing with a stale ``model_best.pth``. The plugin also
    runs :class:`MetricsCSVHook` just before this hook, so every evaluation a checkpoint has
    seen is in ``metrics.csv``.
    """

    def after_train_step(self, algorithm):
        if not (self.every_n_iters(algorithm, algorithm.num_eval_iter) or self.is_last_iter(algorithm)):
            return
        if algorithm.distributed and algorithm.rank % algorithm.ngpus_per_node != 0:
            return
        save_path = os.path.join(algorithm.save_dir, algorithm.save_name)
        if algorithm.it == algorithm.best_it:
            algorithm.save_model("model_best.pth", save_path)
        algorithm.save_model("latest_model.pth", save_path)
