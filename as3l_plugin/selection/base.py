"""The sampler contract shared by every labeled-set selection method.

A sampler chooses which ``budget`` samples to send for annotation. Subclasses implement
:meth:`BaseSampler._select`; :meth:`BaseSampler.select` validates everything up front and
checks the result afterwards:

- ``features``: 2-D, finite, real (converted to float32 C order by
  :func:`as3l_plugin.io.check_features`);
- ``budget``: an ``int`` with ``0 < budget <= n - len(labeled_idx)``;
- ``seed``: an ``int >= 0``; the same seed gives byte-identical output;
- ``labeled_idx`` (optional warm start): unique row numbers in ``[0, n)`` already labeled;
  the selection never repeats them;
- result: int64 ``(budget,)``, unique, in range, disjoint from ``labeled_idx``, in the
  order the sampler chose them (first = most important).

Diagnostics of the last call are attributes ending in ``_`` (scikit-learn style).
"""

from __future__ import annotations

import numpy as np

from ..errors import ContractError, ParameterError
from ..io import check_features
from ..registry import Configurable
from ..validate import check_index_set, check_int


def check_labeled_idx(labeled_idx, n_samples: int) -> np.ndarray:
    """Validate an optional already-labeled index set → int64 (m,) (empty when None)."""
    if labeled_idx is None:
        return np.empty(0, dtype=np.int64)
    return check_index_set(labeled_idx, n_samples, field="labeled_idx")


class BaseSampler(Configurable):
    """Base class of the samplers; see the module docstring for the contract.

    Subclasses take their hyper-parameters as keyword-only ``__init__`` arguments, store
    them unchanged, declare their constraints in ``_parameter_constraints`` and implement
    :meth:`_select` (checks, ``get_params``, ``__repr__``:
    :class:`as3l_plugin.registry.Configurable`, as is ``name``, set by
    :func:`as3l_plugin.selection.register_sampler`).
    """

    # ----------------------------------------------------------------- the verb
    def select(self, features, budget, seed=0, labeled_idx=None) -> np.ndarray:
        """Choose ``budget`` samples to annotate.

        Parameters
        ----------
        features : array-like of shape (n, d)
            Finite real features (converted to float32).
        budget : int
            Number of samples to choose, ``0 < budget <= n - len(labeled_idx)``.
        seed : int, default=0
            Seeds every random choice; the same seed gives byte-identical output.
        labeled_idx : array-like of int, shape (m,), optional
            Samples already labeled (warm start); never selected again.

        Returns
        -------
        idx : ndarray of int64, shape (budget,)
            Unique row numbers, disjoint from ``labeled_idx``, in selection order.
        """
        self._check_params()
        X = check_features(features)
        n = X.shape[0]
        labeled = check_labeled_idx(labeled_idx, n)
        budget = check_int(budget, "budget")
        seed = check_int(seed, "seed", low=0)
        avail = n - labeled.size
        if budget <= 0:
            raise ParameterError(f"budget={budget} must be >= 1", field="budget")
        if budget > avail:
            what = "samples" if labeled.size == 0 else "unlabeled samples"
            raise ParameterError(f"budget={budget} > {avail} {what}; lower budget",
                                 field="budget")
        out = np.asarray(self._select(X, budget, seed, labeled))
        self._check_output(out, budget, n, labeled)
        return out.astype(np.int64, copy=False)

    def _check_output(self, out, budget, n, labeled):
        who = type(self).__name__
        if out.shape != (budget,) or not np.issubdtype(out.dtype, np.integer):
            raise ContractError(f"{who} returned {out.dtype} {out.shape}, expected int64 "
                                f"({budget},) (a bug in the sampler)")
        if out.size and (out.min() < 0 or out.max() >= n):
            raise ContractError(f"{who} returned out-of-range indices (a bug in the sampler)")
        if np.unique(out).size != out.size:
            raise ContractError(f"{who} returned duplicate indices (a bug in the sampler)")
        if labeled.size and np.isin(out, labeled).any():
            raise ContractError(f"{who} re-selected already labeled samples (a bug in the "
                                "sampler)")

    def _select(self, X, budget, seed, labeled_idx) -> np.ndarray:
        """Return ``budget`` unique int indices not in ``labeled_idx``.

        Inputs are validated: ``X`` float32 C-contiguous (n, d), ``budget`` and ``seed``
        ints, ``labeled_idx`` int64 (m,) (possibly empty).
        """
        raise NotImplementedError
