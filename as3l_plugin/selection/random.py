"""Uniform random selection (the usual semi-supervised baseline)."""

from __future__ import annotations

import numpy as np

from .base import BaseSampler


class RandomSampler(BaseSampler):
    """Choose ``budget`` samples uniformly at random without replacement.

    ``numpy.random.default_rng(seed)`` draws from the samples not in ``labeled_idx``; the
    result is in draw order.
    """

    def __init__(self):
        pass

    def _select(self, X, budget, seed, labeled_idx):
        pool = np.setdiff1d(np.arange(X.shape[0], dtype=np.int64), labeled_idx)
        rng = np.random.default_rng(seed)
        return rng.choice(pool, size=budget, replace=False).astype(np.int64)
