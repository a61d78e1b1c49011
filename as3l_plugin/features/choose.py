"""Choosing the feature set AS3L selects and propagates on, without labels.

Candidates are feature matrices over the same rows (``pixels``: PCA of the pixels,
``self``: the pretrained backbone, ``fine``: Eq. 1 fine-tuned, or any other).

The pipeline's criterion is the **outside judge** (``criterion='judge'``, the default when
``judge=`` is given; the pipeline passes :func:`hog_features` of the images): a view of the
same rows that is not a candidate scores every candidate. Over several rounds, each on its own
deterministic subsample of at most ``max_rows`` rows, every candidate and the judge are
L2-normalised and clustered by K-means with ``K = budget`` (the clusters AS3L's selection and
seeded-K-means prior are built from), and give ``k``-nearest-neighbour graphs; a candidate
scores how well its clusters fit the judge's graph plus how well the judge's clusters fit its
graph (each a kappa: the fraction of (row, neighbour) pairs in one cluster, above the rate the
cluster sizes give by chance). No label is used. One judge unrelated to every candidate means
that two near twins (``self`` and its Eq. 1 copy ``fine``) cannot vouch for each other.

Without a judge the default is **cross-view agreement** (``criterion='cross_view'``, at least
3 candidates): each candidate's kNN graph judges the other candidates' clusterings, never its
own, and its scores are centred, so a lenient judge favours no one. ``duel``, ``family``,
``twin_weighted`` and ``pixel_judge`` are variants of it kept for comparison, and
``criterion='stability'`` (mean pairwise adjusted Rand index of K-means runs from independent
seeds) ranks Eq. 1's output first, since any geometry with well-separated clusters is stable
(README, "Which feature set").

Public name: :func:`choose_features`.
"""

from __future__ import annotations

from itertools import combinations
from typing import Dict, Mapping, Tuple

import numpy as np

from ..errors import InputError, ParameterError
from .finetune import l2_normalize

#: preference among equal scores (rounded to 3 decimals): earlier wins
PREFERENCE = ("fine", "self", "pixels")
#: criteria of :func:`choose_features`; the first is the pipeline's (``auto``), with HOG as judge
CRITERIA = ("judge", "cross_view", "duel", "family", "twin_weighted", "pixel_judge",
            "stability")
#: other names accepted for a criterion
ALIASES = {"agreement": "cross_view"}
#: ``family`` criterion: a candidate derived from another is of its family (Eq. 1 of self)
FAMILIES = {"fine": "self"}
CRITERION = CRITERIA[0]


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


def hog_features(images, *, progress: bool = False) -> np.ndarray:
    """Histograms of oriented gradients (Dalal & Triggs; ``skimage.feature.hog``, 9
    orientations, L2-Hys), the hand-made view the ``judge`` criterion scores candidates
    against: uint8 images ``(n, H, W[, C])`` → float32 ``(n, d)``.

    Colour images are averaged to grey. The image is cut into a 2 × 2 grid of cells below 16
    pixels a side (one cell per block), else 4 × 4 (blocks of 2 × 2 cells): ``d = 36`` at
    8 × 8, ``324`` at 28 × 28 or 32 × 32.
    """
    from skimage.feature import hog
    from tqdm.auto import tqdm
    X = np.asarray(images)
    if X.ndim == 4:
        X = X.astype(np.float32).mean(axis=3)
    if X.ndim != 3:
        raise InputError(f"images of shape {X.shape}; expected (n, H, W) or (n, H, W, C)",
                         field="images")
    side = min(X.shape[1:3])
    grid = 2 if side < 16 else 4
    cell, block = side // grid, (1 if grid == 2 else 2)
    rows = [hog(im, orientations=9, pixels_per_cell=(cell, cell),
                cells_per_block=(block, block))
            for im in tqdm(X, desc="HOG", unit="img", disable=not progress, mininterval=2)]
    return np.ascontiguousarray(np.stack(rows), dtype=np.float32)


def judge_scores(candidates: Mapping[str, np.ndarray], budget: int, *, judge,
                 seed: int = 0, k: int = 10, max_rows: int = 10000,
                 rounds: int = 8) -> Dict[str, float]:
    """Every candidate scored against one outside view, the ``judge`` (float ``(n, d)``,
    e.g. :func:`hog_features` of the images), never a candidate itself.

    A candidate's score is the sum of two kappas (see :func:`agreement_matrix`): its
    ``K = budget`` K-means clusters against the judge's ``k``-nearest-neighbour graph, and
    the judge's clusters against the candidate's graph; averaged over ``rounds`` rounds, each
    with its own subsample of at most ``max_rows`` rows and its own K-means seeds. Because
    one judge, unrelated to all candidates, scores them all, two candidates that are near
    twins (``self`` and its Eq. 1 copy ``fine``) cannot raise each other's scores.
    """
    from ..clustering import kmeans, knn
    if judge is None:
        raise ParameterError("the judge criterion needs judge= (e.g. hog_features(images))",
                             field="judge")
    J = np.asarray(judge, dtype=np.float32)
    n = len(next(iter(candidates.values())))
    if J.ndim != 2 or len(J) != n:
        raise InputError(f"judge of shape {J.shape}; expected ({n}, d), the candidates' rows",
                         field="judge")
    if not (isinstance(rounds, (int, np.integer)) and rounds >= 1):
        raise ParameterError(f"rounds={rounds!r} must be an int >= 1", field="rounds")

    got: Dict[str, list] = {a: [] for a in candidates}
    for r in range(rounds):
        rs = seed * 7919 + r
        rows = _subsample(n, max_rows, rs)
        kk = min(k, len(rows) - 1)
        Zj = l2_normalize(J[rows])
        nj, lj = knn(Zj, kk)[1], kmeans(Zj, budget, seed=rs).labels
        for a, X in candidates.items():
            Z = l2_normalize(np.asarray(X, dtype=np.float32)[rows])
            got[a].append(_kappa(kmeans(Z, budget, seed=rs).labels, nj, budget)
                          + _kappa(lj, knn(Z, kk)[1], budget))
    return {a: float(np.mean(v)) for a, v in got.items()}


def stability_score(X, budget: int, *, seed: int = 0, n_runs: int = 4,
                    max_rows: int = 20000) -> float:
    """Mean pairwise adjusted Rand index of ``n_runs`` K-means runs (``K = budget``) on the
    L2-normalised rows of ``X`` (float ``(n, d)``); in ``[-0.5, 1]``, 1 = every run agrees."""
    from sklearn.metrics import adjusted_rand_score

    from ..clustering import kmeans
    Xs = l2_normalize(np.asarray(X, dtype=np.float32)[_subsample(len(X), max_rows, seed)])
    seeds = np.random.SeedSequence(seed).generate_state(n_runs)
    labels = [kmeans(Xs, budget, seed=int(s)).labels for s in seeds]
    return float(np.mean([adjusted_rand_score(a, b) for a, b in combinations(labels, 2)]))


def _subsample(n: int, max_rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    return np.sort(rng.choice(n, max_rows, replace=False)) if n > max_rows else np.arange(n)


def agreement_matrix(candidates: Mapping[str, np.ndarray], budget: int, *, seed: int = 0,
                     k: int = 10, max_rows: int = 10000) -> Dict[Tuple[str, str], float]:
    return _agreement(candidates, budget, seed=seed, k=k, max_rows=max_rows)[0]


def _agreement(candidates, budget, *, seed=0, k=10, max_rows=10000):
    """``{(a, j): kappa}``: how well candidate ``a``'s K-means clusters (``K = budget``) agree
    with candidate ``j``'s ``k``-nearest-neighbour graph (cosine), on a shared subsample.

    ``kappa = (f - e) / (1 - e)``, in ``[-1, 1]``: ``f`` is the fraction of (row, neighbour)
    pairs in one ``a``-cluster, ``e = sum_c p_c^2`` the same fraction for random pairs.
    """
    from ..clustering import kmeans, knn
    names = list(candidates)
    rows = _subsample(len(next(iter(candidates.values()))), max_rows, seed)
    Z = {c: l2_normalize(np.asarray(candidates[c], dtype=np.float32)[rows]) for c in names}
    k = min(k, len(rows) - 1)
    nbrs = {c: knn(Z[c], k)[1] for c in names}
    out = {}
    for a in names:
        lab = kmeans(Z[a], budget, seed=seed).labels
        for j in names:
            out[a, j] = _kappa(lab, nbrs[j], budget)
    return out, nbrs


def _kappa(labels, nbrs, n_clusters: int) -> float:
    """``(f - e) / (1 - e)``: ``f`` the fraction of (row, neighbour) pairs (``nbrs``: int
    ``(n, k)``) whose rows share a cluster of ``labels`` (int ``(n,)``), ``e = sum_c p_c^2``
    the same fraction for random pairs; in ``[-1, 1]``."""
    p = np.bincount(labels, minlength=n_clusters) / len(labels)
    e = float(p @ p)
    return (float(np.mean(labels[nbrs] == labels[:, None])) - e) / (1 - e)


def cross_view_scores(candidates: Mapping[str, np.ndarray], budget: int, *, seed: int = 0,
                      k: int = 10, max_rows: int = 10000) -> Dict[str, float]:
    """Each candidate's clusters judged by the *other* candidates' neighbourhoods.

    Every candidate's kNN graph is a judge; a judge scores the clusterings of all candidates
    but its own (:func:`agreement_matrix`), and its scores are centred (minus their mean), so
    that a judge that agrees with everything does not favour whoever it judges. A
    candidate's score is the mean of its centred scores. Needs at least 3 candidates.
    """
    if len(candidates) < 3:
        raise ParameterError(f"the cross_view criterion needs at least 3 candidates (got "
                             f"{len(candidates)}): each clustering is judged by two others' "
                             "neighbourhoods; use criterion='stability' for two",
                             field="candidates")
    M = agreement_matrix(candidates, budget, seed=seed, k=k, max_rows=max_rows)
    names = list(candidates)
    got: Dict[str, list] = {a: [] for a in names}
    for j in names:
        judged = [a for a in names if a != j]
        mean = float(np.mean([M[a, j] for a in judged]))
        for a in judged:
            got[a].append(M[a, j] - mean)
    return {a: float(np.mean(v)) for a, v in got.items()}


def _need3(candidates, criterion):
    if len(candidates) < 3:
        raise ParameterError(f"the {criterion} criterion needs at least 3 candidates (got "
                             f"{len(candidates)}): each clustering is judged by two others' "
                             "neighbourhoods; use criterion='stability' for two",
                             field="candidates")


def duel_scores(candidates: Mapping[str, np.ndarray], budget: int, *, seed: int = 0,
                k: int = 10, max_rows: int = 10000) -> Dict[str, float]:
    """Pairwise duels: ``D[a, b] = M[a, b] - M[b, a]`` (``M`` of :func:`agreement_matrix`):
    do ``a``'s clusters fit ``b``'s neighbourhoods better than ``b``'s clusters fit ``a``'s?
    A candidate's score is its mean over opponents. Every duel is zero-sum, so two near
    twins (``self`` and Eq. 1's ``fine``) cannot raise each other's score."""
    _need3(candidates, "duel")
    M = agreement_matrix(candidates, budget, seed=seed, k=k, max_rows=max_rows)
    names = list(candidates)
    return {a: float(np.mean([M[a, b] - M[b, a] for b in names if b != a])) for a in names}


def family_scores(candidates: Mapping[str, np.ndarray], budget: int, *, seed: int = 0,
                  k: int = 10, max_rows: int = 10000, families=None) -> Dict[str, float]:
    """Cross-view agreement where a judge never scores its own family (``families``: name →
    the name it is derived from, default :data:`FAMILIES`): each judge's scores of the
    candidates outside its family are centred over those, then averaged per candidate; a
    judge that sees a single other candidate contributes its raw ``M`` minus the mean of
    every judge's raw scores (so that judges stay comparable)."""
    _need3(candidates, "family")
    fam = dict(FAMILIES if families is None else families)
    root = {c: fam.get(c, c) if fam.get(c, c) in candidates else c for c in candidates}
    M = agreement_matrix(candidates, budget, seed=seed, k=k, max_rows=max_rows)
    names = list(candidates)
    got: Dict[str, list] = {a: [] for a in names}
    for j in names:
        judged = [a for a in names if root[a] != root[j]]
        if not judged:
            continue
        mean = float(np.mean([M[a, j] for a in judged])) if len(judged) > 1 else None
        for a in judged:
            got[a].append((j, M[a, j], mean))
    allm = float(np.mean([M[a, j] for a in names for j in names if root[a] != root[j]]))
    return {a: float(np.mean([v - (allm if m is None else m) for _, v, m in g]))
            if g else 0.0 for a, g in got.items()}


def twin_weighted_scores(candidates: Mapping[str, np.ndarray], budget: int, *,
                         seed: int = 0, k: int = 10,
                         max_rows: int = 10000) -> Dict[str, float]:
    """Cross-view agreement, each judge's (centred) verdict on candidate ``a`` weighted by
    how independent the judge is of ``a``: ``1 -`` the fraction of ``k``-nearest neighbours
    their graphs share. A near twin (its graph is ``a``'s) counts for almost nothing."""
    _need3(candidates, "twin_weighted")
    M, nbrs = _agreement(candidates, budget, seed=seed, k=k, max_rows=max_rows)
    names = list(candidates)

    def overlap(a, b):
        A, B = nbrs[a], nbrs[b]
        return float((A[:, :, None] == B[:, None, :]).any(axis=2).mean())
    W = {(a, b): 1.0 - overlap(a, b) for a in names for b in names if a != b}
    num = {a: 0.0 for a in names}
    den = {a: 0.0 for a in names}
    for j in names:
        judged = [a for a in names if a != j]
        mean = float(np.mean([M[a, j] for a in judged]))
        for a in judged:
            num[a] += W[a, j] * (M[a, j] - mean)
            den[a] += W[a, j]
    return {a: num[a] / den[a] if den[a] > 0 else 0.0 for a in names}


def pixel_judge_scores(candidates: Mapping[str, np.ndarray], budget: int, *,
                       seed: int = 0, k: int = 10, max_rows: int = 10000, judge=None,
                       dim: int = 16) -> Dict[str, float]:
    """Cross-view agreement with one extra judge that is never a candidate: ``judge``
    (float ``(n, d)``), by default a seeded Gaussian random projection of the ``pixels``
    candidate to ``dim`` dimensions, so that the pixels, like ``self`` (whose twin is
    ``fine``), have a second, correlated view among the judges."""
    _need3(candidates, "pixel_judge")
    if judge is None:
        if "pixels" not in candidates:
            raise ParameterError("the pixel_judge criterion needs a 'pixels' candidate or a "
                                 "judge= matrix", field="candidates")
        P = np.asarray(candidates["pixels"], dtype=np.float32)
        R = np.random.default_rng(np.random.SeedSequence([seed, 0x9D6E])).standard_normal(
            (P.shape[1], dim)).astype(np.float32)
        judge = P @ R
    J = "\0judge"
    both = dict(candidates)
    both[J] = judge
    M = agreement_matrix(both, budget, seed=seed, k=k, max_rows=max_rows)
    names = list(candidates)
    got: Dict[str, list] = {a: [] for a in names}
    for j in names + [J]:
        judged = [a for a in names if a != j]
        mean = float(np.mean([M[a, j] for a in judged]))
        for a in judged:
            got[a].append(M[a, j] - mean)
    return {a: float(np.mean(v)) for a, v in got.items()}


def resolve_criterion(criterion=None, judge=None) -> str:
    """The criterion :func:`choose_features` runs: ``criterion`` (aliases resolved), or by
    default ``'judge'`` when a judge is given, else ``'cross_view'``."""
    if criterion is None:
        return "judge" if judge is not None else "cross_view"
    criterion = ALIASES.get(criterion, criterion)
    if criterion not in CRITERIA:
        raise ParameterError(f"criterion={criterion!r}; allowed: {', '.join(CRITERIA)}",
                             field="criterion")
    return criterion


def choose_features(candidates: Mapping[str, np.ndarray], budget: int, seed: int = 0,
                    criterion=None, *, judge=None, **kwargs) -> Tuple[str, Dict[str, float]]:
    """The candidate whose budget-sized clusters the data support best.

    Parameters
    ----------
    candidates : mapping of str to array of float32, shape (n, d_name)
        Feature sets over the same ``n`` rows (their widths may differ).
    budget : int
        Labeling budget (``K`` of the K-means clusterings), ``2 <= budget < n``.
    seed : int, default 0
    criterion : {None, 'judge', 'cross_view', 'duel', 'family', 'twin_weighted', \
'pixel_judge', 'stability'}
        None (default): ``'judge'`` (:func:`judge_scores`) when ``judge`` is given, else
        ``'cross_view'`` (:func:`cross_view_scores`); see the module docstring.
    judge : array of float32, shape (n, d), optional
        An outside view of the same rows that is not a candidate, e.g.
        :func:`hog_features` of the images (what the pipeline passes).
    **kwargs
        ``k``, ``max_rows`` (and ``rounds`` for ``judge``) of the agreement criteria;
        ``n_runs``, ``max_rows`` of :func:`stability_score`.

    Returns
    -------
    name : str
        The chosen key (ties, at 3 decimals, by :data:`PREFERENCE`, then by key order).
    scores : dict of str to float
        Every candidate's score (higher is better).
    """
    criterion = resolve_criterion(criterion, judge)
    if not candidates:
        raise InputError("no candidate feature sets given", field="candidates")
    n = {k: int(np.shape(v)[0]) for k, v in candidates.items()}
    if len(set(n.values())) != 1:
        raise InputError(f"candidates have different row counts {n}; they must describe the "
                         "same samples", field="candidates")
    rows = next(iter(n.values()))
    if not (isinstance(budget, (int, np.integer)) and 2 <= budget < rows):
        raise ParameterError(f"budget={budget!r} must be an int in [2, {rows})", field="budget")
    if criterion == "judge":
        scores = judge_scores(candidates, int(budget), judge=judge, seed=seed, **kwargs)
    elif criterion == "cross_view":
        scores = cross_view_scores(candidates, int(budget), seed=seed, **kwargs)
    elif criterion == "pixel_judge":
        scores = pixel_judge_scores(candidates, int(budget), seed=seed, judge=judge, **kwargs)
    elif criterion == "duel":
        scores = duel_scores(candidates, int(budget), seed=seed, **kwargs)
    elif criterion == "family":
        scores = family_scores(candidates, int(budget), seed=seed, **kwargs)
    elif criterion == "twin_weighted":
        scores = twin_weighted_scores(candidates, int(budget), seed=seed, **kwargs)
    else:
        scores = {k: stability_score(v, int(budget), seed=seed, **kwargs)
                  for k, v in candidates.items()}
    order = list(candidates)
    rank = lambda k: (-round(scores[k], 3),  # noqa: E731
                      PREFERENCE.index(k) if k in PREFERENCE else len(PREFERENCE),
                      order.index(k))
    return min(scores, key=rank), scores
