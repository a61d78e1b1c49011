"""Core-set selection by k-center greedy (Sener & Savarese 2018).

Each step adds the sample farthest (Euclidean) from everything chosen so far, which
minimises the covering radius greedily (a 2-approximation). Deterministic start: with no
labeled samples the first pick is the sample nearest to the feature mean (``start='mean'``)
or a seeded uniform draw (``start='random'``); with ``labeled_idx`` the labeled samples are
the initial centres. Ties go to the smallest index. Cost: ``budget`` passes of ``n x d``.
"""

from __future__ import annotations

import numpy as np

from ..validate import Options
from .base import BaseSampler
from ._utils import kcenter_fill

STARTS = ("mean", "random")


class CoresetSampler(BaseSampler):
    """k-center greedy.

    Parameters
    ----------
    start : {'mean', 'random'}, default='mean'
        First centre when there is no labeled sample: nearest to the mean (``seed`` is then
        unused) or uniform at random from ``seed``.
    """

    _parameter_constraints = {"start": [Options(STARTS)]}

    def __init__(self, *, start="mean"):
        self.start = start

    def _select(self, X, budget, seed, labeled_idx):
        chosen = []
        if labeled_idx.size == 0 and self.start == "random":
            chosen = [int(np.random.default_rng(seed).integers(X.shape[0]))]
        chosen += kcenter_fill(X, chosen, labeled_idx, budget - len(chosen))
        return np.asarray(chosen, dtype=np.int64)
