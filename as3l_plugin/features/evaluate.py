"""Feature quality with all labels: linear probe, kNN and K-means purity.

- **linear**: multinomial logistic regression (scikit-learn, L-BFGS) on standardised
  training features, accuracy on the test features: the usual upper reference for what a
  linear classifier can read from the features.
- **knn**: cosine ``k``-nearest-neighbour vote (k=20, similarity-weighted, as in
  self-supervised evaluation) of every test sample among the training features.
- **purity**: K-means with ``K = num_classes`` on the (L2-normalised) training features;
  the fraction of samples whose cluster's majority class is their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError, ParameterError


@dataclass
class LinearEvalResult:
    linear_acc: float
    knn_acc: float
    kmeans_purity: float
    n_train: int
    n_test: int
    dim: int

    def as_dict(self) -> dict:
        return asdict(self)


def knn_accuracy(train, y_train, test, y_test, *, k: int = 20, num_classes: int) -> float:
    """Cosine kNN accuracy (similarity-weighted vote; ties to the smallest class)."""
    import torch
    a = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(train)), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(test)), dim=1)
    ytr = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    k = min(k, a.shape[0])
    correct = 0
    for s in range(0, b.shape[0], 1024):
        sim = b[s:s + 1024] @ a.T
        val, idx = sim.topk(k, dim=1)
        votes = torch.zeros(idx.shape[0], num_classes)
        votes.scatter_add_(1, ytr[idx], val.clamp_min(0) + 1e-6)
        pred = votes.argmax(1).numpy()
        correct += int((pred == y_test[s:s + 1024]).sum())
    return correct / len(y_test)


def kmeans_purity(X, y, *, num_classes: int, seed: int = 0) -> float:
    """Purity of K-means (K = ``num_classes``) on L2-normalised ``X``."""
    from ..clustering import kmeans
    from .finetune import l2_normalize
    lab = kmeans(l2_normalize(X), num_classes, seed=seed).labels
    table = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(table, (lab, y), 1)
    return float(table.max(axis=1).sum() / len(y))


def linear_probe_accuracy(train, y_train, test, y_test, *, max_iter: int = 300,
                          C: float = 1.0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    sc = StandardScaler().fit(train)
    clf = LogisticRegression(max_iter=max_iter, C=C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(sc.transform(train), y_train)
    return float((clf.predict(sc.transform(test)) == y_test).mean())


def _check_pair(X, y, name):
    from ..io import check_features
    X = check_features(X, name=name)
    y = np.asarray(y)
    if y.shape != (X.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be ints of shape ({X.shape[0]},) to match {name}, got "
                         f"{y.dtype} {y.shape}", field=name)
    return X, y.astype(np.int64)


def linear_eval(train_features, y_train, test_features, y_test, *, num_classes=None,
                knn_k: int = 20, seed: int = 0) -> LinearEvalResult:
    """Linear-probe and kNN test accuracy, and K-means purity on the training features.

    Parameters
    ----------
    train_features : array-like of float, shape (n_train, d)
    y_train : array-like of int, shape (n_train,)
    test_features : array-like of float, shape (n_test, d)
    y_test : array-like of int, shape (n_test,)
    num_classes : int, optional
        Default ``max(y_train) + 1``.
    knn_k : int, default 20
    seed : int, default 0
        Seed of the K-means run for purity.

    Returns
    -------
    LinearEvalResult
    """
    Xtr, ytr = _check_pair(train_features, y_train, "train_features")
    Xte, yte = _check_pair(test_features, y_test, "test_features")
    if Xtr.shape[1] != Xte.shape[1]:
        raise InputError(f"train features have {Xtr.shape[1]} columns, test features "
                         f"{Xte.shape[1]}; extract both with the same checkpoint",
                         field="test_features")
    C = int(num_classes if num_classes is not None else ytr.max() + 1)
    if not (isinstance(knn_k, int) and knn_k >= 1):
        raise ParameterError(f"knn_k={knn_k!r} must be an int >= 1", field="knn_k")
    return LinearEvalResult(
        linear_acc=linear_probe_accuracy(Xtr, ytr, Xte, yte),
        knn_acc=knn_accuracy(Xtr, ytr, Xte, yte, k=knn_k, num_classes=C),
        kmeans_purity=kmeans_purity(Xtr, ytr, num_classes=C, seed=seed),
        n_train=int(Xtr.shape[0]), n_test=int(Xte.shape[0]), dim=int(Xtr.shape[1]))
