"""The propagator contract shared by every label-propagation method.

A propagator turns a few labeled samples into a *prior*: a class distribution for every
sample of the dataset. Subclasses implement :meth:`BasePropagator._propagate`, which returns
non-negative per-class evidence; :meth:`BasePropagator.propagate` validates the inputs up
front and turns the evidence into a valid prior:

- rows are normalised to sum to 1;
- rows that received no evidence at all become uniform (``1 / num_classes``), with a
  :class:`PropagationWarning` giving their count;
- labeled rows are set to the one-hot vector of their label, whatever the method said.

Diagnostics of the last call are stored as attributes ending in ``_`` (``coverage_``,
``n_uniform_``), scikit-learn style.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ContractError, LabelsError
from ..io import check_features
from ..registry import Configurable
from ..validate import check_index_set, check_int


#: float64 evidence entries turned into prior rows at a time (2 MB)
_FINALIZE_ENTRIES = 1 << 18


class RowEvidence:
    """Evidence handed out in row blocks, for propagators that need not hold the whole
    float64 ``(n, C)`` matrix: ``rows(s, e)`` returns the evidence of rows ``s:e`` as an
    array ``(e - s, C)`` of non-negative floats; ``n`` is the number of rows."""

    def __init__(self, n, rows):
        self.n = int(n)
        self.rows = rows


class PropagationWarning(UserWarning):
    """A propagation result is valid but degenerate (e.g. rows with no label evidence)."""


_LABELED_MESSAGES = {
    "empty": "is empty; at least one labeled sample is needed to propagate labels",
    "duplicate": "contains duplicates (e.g. {dup}); each sample can be labeled once",
}


def check_labeled(labeled_idx, labels, n_samples: int, num_classes: int):
    """Validate a labeled set against a dataset of ``n_samples`` rows.

    Parameters
    ----------
    labeled_idx : array-like of int, shape (m,)
        Row numbers of the labeled samples; unique, in ``[0, n_samples)``.
    labels : array-like of int, shape (m,)
        Their class ids, in ``[0, num_classes)``.

    Returns
    -------
    labeled_idx, labels : ndarray of int64, shape (m,)
    """
    idx = check_index_set(labeled_idx, n_samples, allow_empty=False, field="labeled_idx",
                          messages=_LABELED_MESSAGES)
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != idx.shape[0]:
        raise LabelsError(f"expected shape ({idx.shape[0]},) to match labeled_idx, got "
                          f"{lab.shape}", field="labels")
    if not np.issubdtype(lab.dtype, np.integer):
        raise LabelsError(f"expected integer class ids, got dtype {lab.dtype}", field="labels")
    lab = lab.astype(np.int64)
    bad = (lab < 0) | (lab >= num_classes)
    if bad.any():
        raise LabelsError(f"{int(bad.sum())} class id(s) out of range [0, {num_classes}) "
                          f"(first: {lab[bad][:5].tolist()}); check --num-classes",
                          field="labels")
    return idx, lab


class BasePropagator(Configurable):
    """Base class of the propagators; see the module docstring for the contract.

    Subclasses take their hyper-parameters as keyword-only ``__init__`` arguments, store
    them unchanged, declare their constraints in ``_parameter_constraints`` and implement
    :meth:`_propagate` (checks, ``get_params``, ``__repr__``:
    :class:`as3l_plugin.registry.Configurable`, as is ``name``, set by
    :func:`as3l_plugin.propagation.register_propagator`).
    """

    # ----------------------------------------------------------------- the verb
    def propagate(self, features, labeled_idx, labels, num_classes, seed=0) -> np.ndarray:
        """Propagate the labels of ``labeled_idx`` to every sample.

        Parameters
        ----------
        features : array-like of shape (n, d)
            Finite real features (converted to float32).
        labeled_idx : array-like of int, shape (m,)
            Unique row numbers of the labeled samples.
        labels : array-like of int, shape (m,)
            Their class ids in ``[0, num_classes)``.
        num_classes : int
            Number of classes C (>= 1); classes absent from ``labels`` get columns too.
        seed : int, default=0
            Seeds every random choice; the same seed gives byte-identical output.

        Returns
        -------
        prior : ndarray of float32, shape (n, num_classes)
            Rows sum to 1; labeled rows are one-hot; rows without evidence are uniform.
        """
        self._check_params()
        num_classes = check_int(num_classes, "num_classes", low=1, named=False)
        seed = check_int(seed, "seed", low=0, named=False)
        X = check_features(features)
        idx, lab = check_labeled(labeled_idx, labels, X.shape[0], num_classes)

        evidence = self._propagate(X, idx, lab, num_classes, seed)
        if not isinstance(evidence, RowEvidence):
            evidence = np.asarray(evidence, dtype=np.float64)
            if evidence.shape != (X.shape[0], num_classes):
                raise ContractError(f"{type(self).__name__} returned shape {evidence.shape}, "
                                    f"expected {(X.shape[0], num_classes)} (a bug in the "
                                    "propagator)")
            evidence = RowEvidence(evidence.shape[0], lambda s, e, a=evidence: a[s:e])
        return self._finalize(evidence, idx, lab, num_classes)

    def _finalize(self, evidence, idx, lab, num_classes) -> np.ndarray:
        """The prior from ``evidence`` (:class:`RowEvidence`), in row blocks: the float64
        evidence of at most ``_FINALIZE_ENTRIES`` entries exists at a time (every step is
        row-wise, so the result does not depend on the block size)."""
        n = evidence.n
        order = np.argsort(idx, kind="stable")
        idx_s, lab_s = idx[order], lab[order]
        prior = np.empty((n, num_classes), dtype=np.float32)
        n_uniform = 0
        step = max(1, _FINALIZE_ENTRIES // num_classes)
        for s in range(0, n, step):
            e = min(n, s + step)
            ev = np.asarray(evidence.rows(s, e), dtype=np.float64)
            if not np.isfinite(ev).all() or (ev < 0).any():
                raise ContractError(f"{type(self).__name__} returned negative or non-finite "
                                    "evidence (a bug in the propagator)")
            a, b = np.searchsorted(idx_s, (s, e))
            li, ll = idx_s[a:b] - s, lab_s[a:b]
            totals = ev.sum(axis=1)
            has = totals > 0
            has[li] = True
            block = np.empty_like(ev)
            block[has] = ev[has] / np.where(totals[has] > 0, totals[has], 1.0)[:, None]
            block[~has] = 1.0 / num_classes
            block[li] = 0.0
            block[li, ll] = 1.0
            n_uniform += int((~has).sum())
            out = block.astype(np.float32)
            # renormalise in float32 so that rows sum to 1 at the stored precision
            out /= out.sum(axis=1, keepdims=True)
            prior[s:e] = out
        self.n_uniform_ = n_uniform
        self.coverage_ = float((n - n_uniform) / n)
        if self.n_uniform_:
            warnings.warn(f"{self.n_uniform_} of {n} rows got no label evidence from "
                          f"{self.name or type(self).__name__} and were set to the uniform "
                          "distribution", PropagationWarning, stacklevel=3)
        return prior

    def _propagate(self, X, labeled_idx, labels, num_classes, seed) -> np.ndarray:
        """Return non-negative evidence, shape (n, num_classes) (any float dtype).

        Inputs are already validated: ``X`` float32 C-contiguous (n, d), ``labeled_idx`` and
        ``labels`` int64 (m,), ``num_classes`` and ``seed`` ints.
        """
        raise NotImplementedError
