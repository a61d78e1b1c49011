"""Quality of a prior and of a labeled selection.

- :func:`prior_accuracy` — argmax accuracy of the prior on the rows that were not labeled;
- :func:`class_coverage` — how many classes the labeled selection contains;
- :func:`expected_calibration_error` — ECE of the prior's top-class confidence
  (Naeini et al. 2015; Guo et al. 2017: 15 equal-width bins);
- :func:`selective_accuracy` — accuracy on the prior's most confident rows (does its
  confidence rank its own mistakes?).

``argmax`` ties (e.g. a uniform row) resolve to the smallest class id, as ``numpy.argmax``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError, LabelsError, PriorError
from .validate import Interval, check_int

__all__ = ["prior_accuracy", "class_coverage", "expected_calibration_error",
           "selective_accuracy", "check_prior"]


def check_prior(prior, *, n_samples: int | None = None, num_classes: int | None = None,
                path=None) -> np.ndarray:
    """Validate a prior matrix: 2-D, finite, non-negative, rows summing to 1 (±1e-3).

    The check of a prior to be scored (error field ``prior``). A training run's
    ``prior_file`` is checked by :func:`as3l_plugin.usb.prior_data.check_prior_file` instead
    (float32, with its own messages).

    Returns
    -------
    prior : ndarray of float64, shape (n, C)
    """
    P = np.asarray(prior)
    if P.ndim != 2 or P.shape[0] == 0 or P.shape[1] == 0:
        raise PriorError(f"expected a non-empty 2-D array (n_samples, num_classes), got shape "
                         f"{P.shape}", path=path, field="prior")
    if not (np.issubdtype(P.dtype, np.floating) or np.issubdtype(P.dtype, np.integer)):
        raise PriorError(f"expected a float array, got dtype {P.dtype}", path=path,
                         field="prior")
    P = P.astype(np.float64)
    if not np.isfinite(P).all() or (P < 0).any():
        raise PriorError("has negative, NaN or inf entries", path=path, field="prior")
    sums = P.sum(axis=1)
    bad = np.abs(sums - 1.0) > 1e-3
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise PriorError(f"{int(bad.sum())} row(s) do not sum to 1 (row {r} sums to "
                         f"{sums[r]:.4g})", path=path, field="prior")
    if n_samples is not None and P.shape[0] != n_samples:
        raise PriorError(f"has {P.shape[0]} rows but the labels have {n_samples}; they must "
                         "describe the same dataset in the same order", path=path,
                         field="prior")
    if num_classes is not None and P.shape[1] != num_classes:
        raise PriorError(f"has {P.shape[1]} columns, expected num_classes={num_classes}",
                         path=path, field="prior")
    return P


def _check_labels(y, *, n=None, num_classes=None, name="y_true"):
    y = np.asarray(y)
    if y.ndim != 1:
        raise LabelsError(f"expected a 1-D array of class ids, got shape {y.shape}", field=name)
    if not np.issubdtype(y.dtype, np.integer):
        raise LabelsError(f"expected integer class ids, got dtype {y.dtype}", field=name)
    if n is not None and y.shape[0] != n:
        raise LabelsError(f"has {y.shape[0]} entries but the prior has {n} rows", field=name)
    y = y.astype(np.int64)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise LabelsError(f"class ids must be in [0, {num_classes}), got range "
                          f"[{y.min()}, {y.max()}]", field=name)
    return y


def _keep_mask(n, exclude):
    keep = np.ones(n, dtype=bool)
    if exclude is None:
        return keep
    ex = np.asarray(exclude)
    if ex.ndim != 1 or (ex.size and not np.issubdtype(ex.dtype, np.integer)):
        raise InputError(f"expected a 1-D integer index array, got {ex.dtype} {ex.shape}",
                         field="exclude")
    if ex.size and (ex.min() < 0 or ex.max() >= n):
        raise InputError(f"indices must be in [0, {n}), got range [{ex.min()}, {ex.max()}]",
                         field="exclude")
    keep[ex.astype(np.int64)] = False
    if not keep.any():
        raise InputError("excludes every row; nothing left to evaluate", field="exclude")
    return keep


def _scored_rows(prior, y_true, exclude):
    """The checked prior (n, C) and labels (n,), without the ``exclude`` rows."""
    P = check_prior(prior)
    y = _check_labels(y_true, n=P.shape[0], num_classes=P.shape[1])
    keep = _keep_mask(P.shape[0], exclude)
    return P[keep], y[keep]


def prior_accuracy(prior, y_true, exclude=None) -> float:
    """Argmax accuracy of ``prior`` against ``y_true`` on the rows not in ``exclude``.

    Parameters
    ----------
    prior : array-like of shape (n, C)
    y_true : array-like of int, shape (n,)
    exclude : array-like of int, shape (m,), optional
        Rows to leave out (typically the labeled indices).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> prior_accuracy([[0.9, 0.1], [0.2, 0.8], [1, 0]], [0, 0, 0], exclude=[2])
    0.5
    """
    P, y = _scored_rows(prior, y_true, exclude)
    return float((P.argmax(axis=1) == y).mean())


def class_coverage(labels_of_selected, num_classes) -> int:
    """Number of distinct classes among the labels of the selected samples.

    Parameters
    ----------
    labels_of_selected : array-like of int, shape (m,)
    num_classes : int
        Class ids must lie in ``[0, num_classes)``.

    Examples
    --------
    >>> class_coverage([3, 1, 3, 0], 5)
    3
    """
    check_int(num_classes, "num_classes", low=1, message="must be an int >= 1")
    y = _check_labels(labels_of_selected, num_classes=int(num_classes),
                      name="labels_of_selected")
    return int(np.unique(y).size)


def expected_calibration_error(prior, y_true, n_bins=15, exclude=None) -> float:
    """Expected calibration error of the top-class confidence.

    The confidence of a row is its largest probability and its prediction the argmax; rows are
    put into ``n_bins`` equal-width bins over ``[0, 1]`` (right-closed: ``(a, b]``, the first
    bin also takes 0) and ``ECE = sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|``.

    Parameters
    ----------
    prior : array-like of shape (n, C)
    y_true : array-like of int, shape (n,)
    n_bins : int, default=15
    exclude : array-like of int, optional
        Rows to leave out (typically the labeled indices).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> expected_calibration_error([[1.0, 0.0], [0.6, 0.4]], [0, 1], n_bins=10)
    0.3
    """
    check_int(n_bins, "n_bins", low=1, message="must be an int >= 1")
    P, y = _scored_rows(prior, y_true, exclude)
    conf = P.max(axis=1)
    correct = (P.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, int(n_bins) - 1)
    ece = 0.0
    n = conf.size
    for k in np.unique(b):
        m = b == k
        ece += m.sum() / n * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def selective_accuracy(prior, y_true, fraction, exclude=None) -> float:
    """Argmax accuracy on the ``fraction`` of rows with the highest top-class confidence.

    Rows are ranked by their largest probability, highest first (a stable sort: among equal
    confidences the earlier row comes first) and the first ``ceil(fraction * n)`` are scored.
    ``fraction=1`` is :func:`prior_accuracy`. A prior whose confidence says nothing about its
    mistakes scores about its overall accuracy at every fraction.

    Parameters
    ----------
    prior : array-like of shape (n, C)
    y_true : array-like of int, shape (n,)
    fraction : float in (0, 1]
    exclude : array-like of int, optional
        Rows to leave out (typically the labeled indices).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> selective_accuracy([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]], [0, 1, 1, 1], 0.5)
    1.0
    """
    Interval(numbers.Real, 0, 1, closed="right").check(fraction, "fraction")
    P, y = _scored_rows(prior, y_true, exclude)
    order = np.argsort(-P.max(axis=1), kind="stable")[:int(np.ceil(fraction * P.shape[0]))]
    return float((P[order].argmax(axis=1) == y[order]).mean())
