"""Feature fine-tuning with multiple K-means runs (AS3L Sec. 3.2.1, Eq. 1).

``f_self`` (n, d) is clustered ``C`` times with K-means (different seeds). A linear layer
``f_fine = W f_self + b`` of the same width is trained to minimise

.. math:: L = \\frac{1}{CN} \\sum_i \\sum_j \\| f_{fine,i} - c_{i,j} \\|_2^2

where ``c_{i,j}`` is the centre of sample ``i``'s cluster in run ``j``. Samples that every run
puts in the same cluster are pulled to one point; samples the runs disagree on are pulled
towards several centres and stay in between, which is what makes the later multi-clustering
selection robust. The centres are fixed targets, so the loss cannot be lowered by collapsing.

Implementation notes
--------------------
- ``mean_j ||y - c_ij||^2 = ||y - t_i||^2 + v_i`` with ``t_i = mean_j c_ij`` and ``v_i`` the
  spread of the ``C`` centres; we train on this form (same value and gradient as Eq. 1,
  memory ``O(n d)`` instead of ``O(C n d)``).
- ``W`` starts as the identity and ``b`` as 0 (so ``f_fine = f_self`` at epoch 0 and
  training only moves features towards their centres); Adam, mini-batches of 256, 40 epochs
  (the paper's count), learning rate 1e-3.
- ``normalize=True`` (default) L2-normalises ``f_self`` rows first: SimSiam is trained with
  a cosine loss, so its features' norms carry no class information and K-means on raw norms
  is dominated by them (see the README for the measured effect).
- Default ``K``: ``n_clusters`` if given; else the labeling ``budget`` if given (the paper
  sets K to the number of samples to select); else ``num_classes`` (e.g. read from the
  features' sidecar); else 10.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import InputError, ParameterError

DEFAULT_K = 10


def resolve_k(n_clusters=None, budget=None, num_classes=None) -> int:
    """The number of clusters per the rule in the module docstring."""
    for name, v in (("n_clusters", n_clusters), ("budget", budget), ("num_classes", num_classes)):
        if v is not None:
            if not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ParameterError(f"{name}={v!r} must be an int >= 1", field=name)
            return int(v)
    return DEFAULT_K


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` (``(n, d)``) scaled to unit L2 norm (zero rows stay zero) → float32."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.maximum(norms, 1e-12)).astype(np.float32)


class FeatureFinetuner:
    """Train ``f_fine = W f_self + b`` with Eq. 1 (see the module docstring).

    Parameters
    ----------
    n_clusters : int, default 10
        ``K`` of every K-means run; ``1 <= K <= n``.
    n_runs : int, default 6
        ``C``, the number of K-means runs (seeds ``seed, seed+1, ...``).
    epochs : int, default 40
    batch_size : int, default 256
    lr : float, default 1e-3
        Adam learning rate.
    normalize : bool, default True
        L2-normalise the rows of ``f_self`` before clustering and training.
    kmeans_iter : int, default 50
        Lloyd iterations per K-means run.
    seed : int, default 0
    device : str or torch.device, default 'cpu'
        Where the linear layer trains (and, off the CPU, where the K-means runs go:
        ``clustering.kmeans(..., device=)``); CUDA on a machine without it is a
        :class:`ParameterError`.
    progress : bool, default True

    Attributes
    ----------
    weight_ : ndarray of float32, shape (d, d)
    bias_ : ndarray of float32, shape (d,)
    labels_ : ndarray of int64, shape (n_runs, n)
        Cluster of every sample in every run.
    centers_ : list of ndarray of float32, shape (K, d)
    loss_history_ : ndarray of float64, shape (epochs + 1,)
        Eq. 1 on the whole set before training and after every epoch.

    Examples
    --------
    >>> ft = FeatureFinetuner(n_clusters=20).fit(f_self)          # doctest: +SKIP
    >>> f_fine = ft.transform(f_self)                             # doctest: +SKIP
    """

    def __init__(self, *, n_clusters: int = DEFAULT_K, n_runs: int = 6, epochs: int = 40,
                 batch_size: int = 256, lr: float = 1e-3, normalize: bool = True,
                 kmeans_iter: int = 50, seed: int = 0, device: str = "cpu",
                 progress: bool = True):
        self.n_clusters = n_clusters
        self.n_runs = n_runs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.normalize = normalize
        self.kmeans_iter = kmeans_iter
        self.seed = seed
        self.device = device
        self.progress = progress

    def _validate(self, n: int):
        def intp(name, lo, hi=None):
            v = getattr(self, name)
            if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo
                    and (hi is None or v <= hi)):
                rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
                raise ParameterError(f"{name}={v!r} must be an int {rng}", field=name)
        intp("n_clusters", 1, n)
        intp("n_runs", 1)
        intp("epochs", 0)
        intp("batch_size", 1)
        intp("kmeans_iter", 1)
        intp("seed", 0)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ParameterError(f"lr={self.lr!r} must be a finite float > 0", field="lr")
        from ..validate import check_device
        return check_device(self.device)

    def _prep(self, X) -> np.ndarray:
        from ..io import check_features
        X = check_features(X)
        return l2_normalize(X) if self.normalize else X

    def fit(self, X):
        """Cluster ``X`` ``n_runs`` times and train the linear layer.

        Parameters
        ----------
        X : array-like of float, shape (n, d)
            ``f_self``; finite.

        Returns
        -------
        self
        """
        import torch
        from tqdm.auto import tqdm

        from ..clustering import kmeans

        Xp = self._prep(X)
        n, d = Xp.shape
        dev = self._validate(n)
        # the CPU path calls the engine as before (byte-identical files); another device is
        # handed to it
        on_dev = {} if dev.type == "cpu" else {"device": self.device}
        labels, centers = [], []
        for j in range(self.n_runs):
            res = kmeans(Xp, self.n_clusters, seed=self.seed + j, max_iter=self.kmeans_iter,
                         **on_dev)
            labels.append(res.labels)
            centers.append(res.centers)
        self.labels_ = np.stack(labels)
        self.centers_ = centers
        # Eq. 1 = mean_i ||y_i - t_i||^2 + mean_i v_i (t: mean target, v: target spread)
        tgt = np.stack([c[lab] for c, lab in zip(centers, labels)])  # (C, n, d)
        t_mean = tgt.mean(axis=0, dtype=np.float64).astype(np.float32)
        spread = float((tgt.astype(np.float64) ** 2).sum(-1).mean()
                       - (t_mean.astype(np.float64) ** 2).sum(-1).mean())
        del tgt
        self.target_spread_ = spread
        g = torch.Generator().manual_seed(self.seed)
        xt = torch.from_numpy(Xp).to(dev)
        tt = torch.from_numpy(t_mean).to(dev)
        layer = torch.nn.Linear(d, d).to(dev)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(d))
            layer.bias.zero_()
        opt = torch.optim.Adam(layer.parameters(), lr=self.lr)

        def full_loss():
            with torch.no_grad():
                tot = 0.0
                for s in range(0, n, 8192):
                    tot += float(((layer(xt[s:s + 8192]) - tt[s:s + 8192]) ** 2).sum())
            return tot / n + spread

        hist = [full_loss()]
        bar = tqdm(range(self.epochs), desc="finetune (Eq. 1)", disable=not self.progress,
                   leave=False)
        for _ in bar:
            perm = torch.randperm(n, generator=g).to(dev)
            for s in range(0, n, self.batch_size):
                idx = perm[s:s + self.batch_size]
                loss = ((layer(xt[idx]) - tt[idx]) ** 2).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            hist.append(full_loss())
            bar.set_postfix(loss=f"{hist[-1]:.4f}")
        self.weight_ = layer.weight.detach().cpu().numpy().astype(np.float32)
        self.bias_ = layer.bias.detach().cpu().numpy().astype(np.float32)
        self.loss_history_ = np.asarray(hist, dtype=np.float64)
        return self

    def transform(self, X) -> np.ndarray:
        """``f_fine = W prep(X) + b``: float32 ``(n, d)``."""
        if not hasattr(self, "weight_"):
            raise ParameterError("FeatureFinetuner is not fitted; call fit first", field="fit")
        Xp = self._prep(X)
        if Xp.shape[1] != self.weight_.shape[1]:
            raise InputError(f"X has {Xp.shape[1]} features, the layer was fitted on "
                             f"{self.weight_.shape[1]}", field="X")
        return np.ascontiguousarray(Xp @ self.weight_.T + self.bias_, dtype=np.float32)

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)


def finetune_features(features, *, k: Optional[int] = None, budget: Optional[int] = None,
                      num_classes: Optional[int] = None, runs: int = 6, epochs: int = 40,
                      seed: int = 0, device: str = "cpu", progress: bool = True,
                      **kwargs) -> np.ndarray:
    """``f_fine`` from ``f_self`` (float32 ``(n, d)`` → float32 ``(n, d)``).

    ``K`` follows :func:`resolve_k` (``k``, else ``budget``, else ``num_classes``, else 10);
    other keyword arguments go to :class:`FeatureFinetuner`.
    """
    K = resolve_k(k, budget, num_classes)
    ft = FeatureFinetuner(n_clusters=K, n_runs=runs, epochs=epochs, seed=seed, device=device,
                          progress=progress, **kwargs)
    return ft.fit_transform(features)
