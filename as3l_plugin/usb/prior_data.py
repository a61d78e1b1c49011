"""The prior file and the prior-augmented unlabeled dataset.

A prior is a float32 ``(n, C)`` matrix (rows sum to 1) over the unlabeled pool in its
*original* order — the dataset's train split (``digits``, ``fashion_mnist``, CIFAR, SVHN)
or, for STL-10, USB's pool order (the ``unlabeled`` split followed by the ``train`` split).
USB's unlabeled dataset is not in that order when labeled data is included in it
(``include_lb_to_ulb``: item ``i`` is ``concat(lb_idx, ulb_idx)[i]``), so every lookup goes
through the dataset's ``orig_index`` (recorded by :mod:`as3l_plugin.usb.compat`).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from ..errors import PriorError


def check_prior_file(prior, *, n_samples: int, num_classes: int, path=None) -> np.ndarray:
    """Validate a prior matrix and return it as C-contiguous float32 ``(n_samples, num_classes)``.

    The check of a training run's ``prior_file`` (error field ``prior_file``; float32, as the
    loss reads it; shape checked first). Not :func:`as3l_plugin.metrics.check_prior`, which
    checks a prior for scoring (float64; integer arrays allowed; shape checked last).

    Raises
    ------
    PriorError
        Wrong number of dimensions, rows (≠ ``n_samples``) or columns (≠ ``num_classes``),
        non-finite or negative values, or rows not summing to 1 (tolerance 1e-3).
    """
    where = dict(path=path, field="prior_file")
    p = np.asarray(prior)
    if p.ndim != 2:
        raise PriorError(f"expected a 2-D (n_samples, num_classes) matrix, got shape {p.shape}", **where)
    if p.shape[0] != n_samples:
        raise PriorError(f"has {p.shape[0]} rows but the unlabeled pool has {n_samples} samples "
                         "(the prior was made for another dataset or split)", **where)
    if p.shape[1] != num_classes:
        raise PriorError(f"has {p.shape[1]} columns but num_classes={num_classes}", **where)
    if not np.issubdtype(p.dtype, np.floating):
        raise PriorError(f"expected floating-point probabilities, got dtype {p.dtype}", **where)
    p = np.ascontiguousarray(p, dtype=np.float32)
    if not np.isfinite(p).all():
        raise PriorError(f"{int((~np.isfinite(p)).any(axis=1).sum())} row(s) hold NaN or inf", **where)
    if (p < 0).any():
        raise PriorError(f"{int((p < 0).any(axis=1).sum())} row(s) hold negative values", **where)
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > 1e-3
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PriorError(f"{int(bad.sum())} row(s) do not sum to 1 (row {i} sums to "
                         f"{float(sums[i]):.4f}); normalise the rows", **where)
    return p


def load_prior(path, *, n_samples: int, num_classes: int) -> np.ndarray:
    """Load ``prior_file`` (``.npy``) and :func:`check_prior_file` it.

    Missing file → PriorError."""
    from ..errors import InputError
    from ..io import load_npy
    try:
        p = load_npy(path, what="prior")
    except InputError as exc:
        raise PriorError(exc.message, path=path, field="prior_file") from None
    return check_prior_file(p, n_samples=n_samples, num_classes=num_classes, path=path)


class PriorDataset(Dataset):
    """USB's unlabeled ``BasicDataset`` whose items also carry ``prior_ulb``.

    Parameters
    ----------
    base : semilearn BasicDataset
        The unlabeled dataset (items are dicts with ``idx_ulb``…).
    prior : ndarray of float32, shape (n, C)
        The prior in the pool's original order (see the module docstring).
    orig_index : ndarray of int64, shape (len(base),)
        Original row of each item of ``base``.

    ``self[i]`` is ``base[i]`` plus ``'prior_ulb': prior[orig_index[i]]`` (float32 ``(C,)``).
    Other attributes (``data``, ``targets``, ``transform``…) are the base dataset's.
    """

    def __init__(self, base, prior: np.ndarray, orig_index: np.ndarray):
        orig_index = np.asarray(orig_index, dtype=np.int64)
        if orig_index.shape != (len(base),):
            raise PriorError(f"orig_index has shape {orig_index.shape}, expected ({len(base)},)")
        if orig_index.size and (orig_index.min() < 0 or orig_index.max() >= len(prior)):
            raise PriorError(f"orig_index points outside the prior's {len(prior)} rows")
        self.base = base
        self.prior = np.ascontiguousarray(prior, dtype=np.float32)
        self.orig_index = orig_index
        self.orig_len = len(prior)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        item["prior_ulb"] = self.prior[self.orig_index[i]]
        return item

    def __getattr__(self, name):
        if name == "base":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.base, name)
