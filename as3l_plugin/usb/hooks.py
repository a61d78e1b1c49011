"""USB hooks of the plugin: the AS3L prior (:class:`PriorHook`), ``metrics.csv``
(:class:`MetricsCSVHook`) and the checkpoint order (:class:`ProgressLastCheckpointHook`)."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
import torch
from semilearn.core.hooks import CheckpointHook, Hook

from ..errors import ConfigError, ContractError, PriorError
from ..timing import cpu_seconds

PRIOR_MODES = ("remove", "update")
#: where an ``update`` refresh takes the pool's features from (``prior_update_features``)
PRIOR_UPDATE_FEATURES = ("extract", "bank")


def check_bank_world(features: str, world_size) -> None:
    """``bank`` keeps one process's feature bank: refuse it when training spans processes."""
    try:
        world = int(world_size if world_size is not None else 1)
    except (TypeError, ValueError):
        world = 1
    if features == "bank" and world > 1:
        raise ConfigError(f"=bank needs a single process (world_size={world}); use extract "
                          "under distributed training", field="prior_update_features")


def _model_device(algorithm):
    """The device of the run's EMA model weights, or None where there is none to ask."""
    try:
        return next(algorithm.ema_model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return None


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
    features : {'extract', 'bank'}
        Where a refresh takes the pool's features from. ``extract`` (default): a forward
        pass of the EMA model over the whole pool (``algorithm.extract_pool_features()``).
        ``bank``: a feature bank filled by :meth:`record_features` from the weak-view
        features every training step already computes (training model, train mode, weak
        augmentation); at a refresh only the rows never recorded (and, with
        ``bank_max_age``, rows recorded more than that many iterations ago) go through the
        forward pass (``algorithm.extract_pool_features(rows)``). Single process only.
    bank_max_age : int, optional
        ``bank`` only: rows last recorded more than this many iterations before the refresh
        are extracted again (default ``None``: any recorded row is used).

    Attributes
    ----------
    prior_ : Tensor float32 (n, C), on CPU — the current prior.
    version_ : int — number of refreshes so far.
    last_update_it_ : int — iteration of the last refresh (-1 = never).
    bank_ : Tensor float32 (n, d) or None — ``bank`` only: last recorded feature of every pool
        row (``None`` until the first :meth:`record_features`).
    bank_seen_ : Tensor int64 (n,) — ``bank`` only: iteration each row was last recorded at
        (-1 = never).
    last_refresh_extracted_ : int — rows that went through the forward pass at the last
        refresh (all of them in ``extract`` mode).
    """

    def __init__(self, prior, orig_index, *, T: int, mode: str = "remove",
                 update_interval: int = 6900, update_ks=(10, 20, 30, 40, 50, 60),
                 labeled_index=None, labeled_targets=None, seed: int = 0, propagate_fn=None,
                 features: str = "extract", bank_max_age=None):
        super().__init__()
        if mode not in PRIOR_MODES:
            raise ValueError(f"mode={mode!r}; expected one of {PRIOR_MODES}")
        if features not in PRIOR_UPDATE_FEATURES:
            raise ValueError(f"features={features!r}; expected one of {PRIOR_UPDATE_FEATURES}")
        self.features = features
        self.bank_max_age = None if bank_max_age is None else int(bank_max_age)
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
        self.bank_ = None
        self.bank_seen_ = torch.full((self.prior_.shape[0],), -1, dtype=torch.int64)
        self.last_refresh_extracted_ = 0

    @property
    def uses_bank(self) -> bool:
        return self.mode == "update" and self.features == "bank"

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
        state = {"prior": self.prior_.clone(), "mode": self.mode, "T": self.T,
                 "version": self.version_, "last_update_it": self.last_update_it_}
        if self.uses_bank:  # extract mode: the state (and checkpoint) of before the bank
            state["bank"] = None if self.bank_ is None else self.bank_.clone()
            state["bank_seen"] = self.bank_seen_.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        prior = torch.as_tensor(state["prior"]).as_subclass(torch.Tensor)
        if tuple(prior.shape) != tuple(self.prior_.shape):
            raise PriorError(f"checkpoint prior has shape {tuple(prior.shape)}, this run's is "
                             f"{tuple(self.prior_.shape)}; resume with the same dataset and split")
        self._set_prior(prior)
        self.version_ = int(state.get("version", 0))
        self.last_update_it_ = int(state.get("last_update_it", -1))
        if self.uses_bank:  # a checkpoint without a bank (extract mode) starts an empty one
            bank, seen = state.get("bank"), state.get("bank_seen")
            if bank is not None:
                bank = torch.as_tensor(bank).as_subclass(torch.Tensor).to("cpu", torch.float32)
                if bank.ndim != 2 or bank.shape[0] != self.prior_.shape[0]:
                    raise PriorError(f"checkpoint feature bank has shape {tuple(bank.shape)}, "
                                     f"expected ({self.prior_.shape[0]}, d)")
            self.bank_ = None if bank is None else bank.contiguous()
            if seen is None or bank is None:
                self.bank_seen_ = torch.full((self.prior_.shape[0],), -1, dtype=torch.int64)
            else:
                self.bank_seen_ = torch.as_tensor(seen).as_subclass(torch.Tensor).to(
                    "cpu", torch.int64).clone()

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

    # -- feature bank (mode 'update', features 'bank')
    @torch.no_grad()
    def record_features(self, idx_ulb: torch.Tensor, feats: torch.Tensor, it: int) -> None:
        """Store the features of an unlabeled batch: pool row ``orig_index[idx_ulb[i]]`` gets
        ``feats[i]`` (detached, CPU, float32) and last-seen iteration ``it``."""
        feats = feats.detach().to("cpu", torch.float32)
        rows = self.orig_index[idx_ulb.detach().to("cpu").long()]
        if feats.ndim != 2 or feats.shape[0] != rows.shape[0]:
            raise ContractError(f"feature batch of shape {tuple(feats.shape)} for "
                                f"{rows.shape[0]} unlabeled items")
        if self.bank_ is None:
            self.bank_ = torch.zeros((self.prior_.shape[0], feats.shape[1]), dtype=torch.float32)
        elif feats.shape[1] != self.bank_.shape[1]:
            raise ContractError(f"feature batch has {feats.shape[1]} dimensions, the bank "
                                f"{self.bank_.shape[1]}")
        self.bank_[rows] = feats
        self.bank_seen_[rows] = int(it)

    def bank_stale_rows(self, it: int) -> np.ndarray:
        """Pool rows a refresh at iteration ``it`` extracts: never recorded, or (with
        ``bank_max_age``) recorded more than ``bank_max_age`` iterations before ``it``."""
        stale = self.bank_seen_ < 0
        if self.bank_max_age is not None:
            stale |= self.bank_seen_ < int(it) - self.bank_max_age
        return torch.nonzero(stale).flatten().numpy()

    def pool_features(self, algorithm) -> np.ndarray:
        """The refresh's features ``(n, d)`` float32: a full extraction, or the bank with its
        stale rows extracted."""
        n = self.prior_.shape[0]
        if not self.uses_bank or self.bank_ is None:
            feats = np.asarray(algorithm.extract_pool_features(), np.float32)
            self.last_refresh_extracted_ = n
            return feats
        rows = self.bank_stale_rows(algorithm.it)
        feats = self.bank_.numpy().copy()
        if len(rows):
            fresh = np.asarray(algorithm.extract_pool_features(rows), np.float32)
            if fresh.shape != (len(rows), feats.shape[1]):
                raise ContractError(f"extracted features of shape {fresh.shape} for "
                                    f"{len(rows)} rows, the bank has {feats.shape[1]} dimensions")
            feats[rows] = fresh
        self.last_refresh_extracted_ = int(len(rows))
        return feats

    # -- refresh (mode 'update')
    def before_train_step(self, algorithm):
        if self.refresh_due(algorithm.it):
            self.refresh(algorithm)

    def _propagate(self, features, num_classes, device=None):
        """The refreshed prior; its seeded K-means runs on ``device`` when that is CUDA (the
        run's device), else on the CPU."""
        if self.propagate_fn is not None:
            return self.propagate_fn(features, self.labeled_index, self.labeled_targets,
                                     num_classes, self.seed)
        from ..propagation import get_propagator
        cuda = device is not None and torch.device(device).type == "cuda"
        return get_propagator("seeded_kmeans", ks=self.update_ks,
                              device=str(device) if cuda else None).propagate(
            features, self.labeled_index, self.labeled_targets, num_classes, seed=self.seed)

    def refresh(self, algorithm) -> None:
        """Recompute the prior from the model's current features (rank 0; broadcast under DDP)."""
        t0 = time.perf_counter()
        dist = torch.distributed
        ddp = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        num_rows, num_classes = self.prior_.shape
        if ddp:
            check_bank_world(self.features, dist.get_world_size())
        if not ddp or dist.get_rank() == 0:
            feats = self.pool_features(algorithm)
            new = torch.as_tensor(np.asarray(
                self._propagate(feats, num_classes, _model_device(algorithm)), np.float32))
            if tuple(new.shape) != tuple(self.prior_.shape):
                raise ContractError(f"propagation returned shape {tuple(new.shape)}, expected "
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
        bank = (f", {self.last_refresh_extracted_} of {num_rows} rows extracted, the rest from "
                "the feature bank") if self.uses_bank else ""
        algorithm.print_fn(f"prior refreshed at iteration {algorithm.it} (version {self.version_}, "
                           f"{time.perf_counter() - t0:.2f} s{bank})")
        self.last_refresh_time_ = time.perf_counter() - t0


METRICS_COLUMNS = ("iteration", "algorithm", "eval_acc", "eval_loss", "eval_balanced_acc",
                   "best_acc", "train_time_s", "wall_time_s", "cpu_time_s", "lr")


class MetricsCSVHook(Hook):
    """Writes ``<save_dir>/<save_name>/metrics.csv`` after every evaluation (rank 0 only).

    Columns (:data:`METRICS_COLUMNS`): ``iteration`` (iterations done, 1-based like USB's
    log), ``algorithm``, ``eval_acc`` (top-1 on the eval set, EMA weights), ``eval_loss``,
    ``eval_balanced_acc``, ``best_acc``, ``train_time_s`` (training seconds so far without
    evaluation/checkpoint writing, continued across resumes), ``wall_time_s`` (seconds
    since the start, across resumes), ``cpu_time_s`` (CPU seconds, user + system, of the
    training process and its finished child processes as :func:`as3l_plugin.timing.cpu_seconds`
    counts them, across resumes; with several processes rank 0's alone; empty after resuming a
    file written without it),
    ``lr``. The file is rewritten atomically each time; a resumed run keeps the rows up to its
    checkpoint's iteration, and ``resumed_wall_s`` / ``resumed_cpu_s`` (float; 0 for a fresh
    run, ``resumed_cpu_s`` None when unknown: no column, or several processes) are what the
    earlier runs had spent up to it.
    """

    def before_run(self, algorithm):
        args = algorithm.args
        self.path = os.path.join(algorithm.save_dir, algorithm.save_name, "metrics.csv")
        self.writer = (not algorithm.distributed) or algorithm.rank % algorithm.ngpus_per_node == 0
        self.rows = []
        if getattr(args, "resume", False) and os.path.isfile(self.path):
            with open(self.path, newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= algorithm.it]
        last = self.rows[-1] if self.rows else None
        self.resumed_wall_s = float(last["wall_time_s"]) if last else 0.0
        if last is None:  # a fresh run
            cpu = 0.0
        else:  # None: a file written before the column existed
            cpu = float(last["cpu_time_s"]) if last.get("cpu_time_s") else None
        self._wall0 = time.perf_counter() - self.resumed_wall_s
        self._cpu0 = None if cpu is None else cpu_seconds() - cpu
        # rank 0's rows hold rank 0's CPU time only: the other ranks' earlier time is unknown
        several = last is not None and int(getattr(args, "world_size", 1) or 1) > 1
        self.resumed_cpu_s = None if several else cpu
        self.last_row = last

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
            "cpu_time_s": "" if self._cpu0 is None else f"{cpu_seconds() - self._cpu0:.3f}",
            "lr": f"{float(algorithm.optimizer.param_groups[-1]['lr']):.6g}",
        }
        self.rows.append(row)
        self.last_row = row
        if self.writer:
            from ..io import atomic_write_csv
            atomic_write_csv(self.path, METRICS_COLUMNS,
                             [[r.get(c, "") for c in METRICS_COLUMNS] for r in self.rows])


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
