"""Choosing the feature set AS3L selects and propagates on, without labels.

Candidates are feature matrices over the same rows (``pixels``: PCA of the pixels,
``self``: the pretrained backbone, ``fine``: Eq. 1 fine-tuned, or any other). The criterion
is **K-means stability at the labeling budget**: every candidate is L2-normalised and
clustered ``n_runs`` times with ``K = budget`` from independent seeds (on the same
deterministic subsample of at most ``max_rows`` rows); its score is the mean adjusted Rand
index over all pairs of runs. AS3L's selection and its seeded-K-means prior both rely on
the budget-sized clusters being a property of the data rather than of the initialisation:
where runs agree the clusters are well separated, where they disagree the selection lands
on arbitrary splits and the prior propagates across class borders. No label is used.

Public name: :func:`choose_features`.
"""

from __future__ import annotations

from itertools import combinations
from typing import Dict, Mapping, Tuple

import numpy as np

from ..errors import InputError, ParameterError

#: preference among equal scores (rounded to 3 decimals): earlier wins
PREFERENCE = ("fine", "self", "pixels")
#: the name recorded in sidecars next to the scores
CRITERION = "kmeans_stability_at_budget"


def pixel_features(images, dim: int = 50) -> np.ndarray:
    """PCA of the pixels: uint8 images ``(n, H, W[, C])`` → float32 ``(n, dim)``.

    Pixels / 255, centred, projected on the top-``dim`` principal components (each
    component's sign fixed so that its largest loading is positive: reproducible).
    """
    P = np.asarray(images).reshape(len(images), -1).astype(np.float64) / 255.0
    P -= P.mean(axis=0)
    dim = min(dim, P.shape[1])
    w, V = np.linalg.eigh(P.T @ P / len(P))
    top = V[:, np.argsort(w)[::-1][:dim]]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(top.shape[1])])
    return np.ascontiguousarray(P @ top, dtype=np.float32)


def stability_score(X, budget: int, *, seed: int = 0, n_runs: int = 4,
                    max_rows: int = 20000) -> float:
    """Mean pairwise adjusted Rand index of ``n_runs`` K-means runs (``K = budget``) on the
    L2-normalised rows of ``X`` (float ``(n, d)``); in ``[-0.5, 1]``, 1 = every run agrees."""
    from sklearn.metrics import adjusted_rand_score

    from ..clustering import kmeans
    X = np.asarray(X, dtype=np.float32)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    rows = np.sort(rng.choice(len(X), max_rows, replace=False)) if len(X) > max_rows \
        else np.arange(len(X))
    Xs = X[rows]
    Xs = Xs / np.maximum(np.linalg.norm(Xs, axis=1, keepdims=True), 1e-12)
    seeds = np.random.SeedSequence(seed).generate_state(n_runs)
    labels = [kmeans(Xs, budget, seed=int(s)).labels for s in seeds]
    return float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(labels, 2)]))


def choose_features(candidates: Mapping[str, np.ndarray], budget: int, seed: int = 0,
                    **kwargs) -> Tuple[str, Dict[str, float]]:
    """The candidate with the most stable budget-sized K-means clusters.

    Parameters
    ----------
    candidates : mapping of str to array of float32, shape (n, d_name)
        Feature sets over the same ``n`` rows (their widths may differ).
    budget : int
        Labeling budget (``K`` of the K-means runs), ``2 <= budget < n``.
    seed : int, default 0
    **kwargs
        ``n_runs``, ``max_rows`` of :func:`stability_score`.

    Returns
    -------
    name : str
        The chosen key (ties, at 3 decimals, by :data:`PREFERENCE`, then by key order).
    scores : dict of str to float
        Every candidate's stability score.
    """
    if not candidates:
        raise InputError("no candidate feature sets given", field="candidates")
    n = {k: int(np.shape(v)[0]) for k, v in candidates.items()}
    if len(set(n.values())) != 1:
        raise InputError(f"candidates have different row counts {n}; they must describe the "
                         "same samples", field="candidates")
    rows = next(iter(n.values()))
    if not (isinstance(budget, (int, np.integer)) and 2 <= budget < rows):
        raise ParameterError(f"budget={budget!r} must be an int in [2, {rows})", field="budget")
    scores = {k: stability_score(v, int(budget), seed=seed, **kwargs)
              for k, v in candidates.items()}
    order = list(candidates)
    rank = lambda k: (-round(scores[k], 3),  # noqa: E731
                      PREFERENCE.index(k) if k in PREFERENCE else len(PREFERENCE),
                      order.index(k))
    return min(scores, key=rank), scores
