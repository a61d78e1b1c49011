"""The datasets the plugin ships loaders for, as plain NumPy arrays.

One definition per dataset, shared by the feature stage, the USB integration and the
pipeline. Nothing is ever downloaded: a missing dataset is a :class:`DatasetError` that
says how to install it.

``load_dataset(name, data_dir=None)`` returns an :class:`ArrayDataset` with

- ``x_train``: uint8 ``(n, H, W)`` (grayscale) or ``(n, H, W, 3)`` (RGB), dataset order;
- ``y_train``: int64 ``(n,)``; ``x_test``, ``y_test`` likewise;
- ``num_classes``, ``mean``/``std`` (per channel, of ``x/255`` on the train split).

Embedded datasets
-----------------
``digits``
    scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes, values 0..16 scaled
    to 0..255). Fixed split: sample ``i`` is a test sample iff ``i % 5 == 0`` (360 test,
    1,437 train), independent of library versions.
``fashion_mnist``
    Fashion-MNIST 28x28 (60,000 train / 10,000 test) read from the Debian package
    ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``), or from
    ``data_dir`` / ``$AS3L_FASHION_MNIST_DIR`` holding the four ``*-ubyte.gz`` files.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict

import numpy as np

from .errors import DatasetError

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"


@dataclass(frozen=True)
class ArrayDataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def in_channels(self) -> int:
        return 1 if self.x_train.ndim == 3 else int(self.x_train.shape[-1])


def _stats(x: np.ndarray) -> tuple:
    x = x.astype(np.float64) / 255.0
    axes = tuple(range(x.ndim)) if x.ndim == 3 else tuple(range(x.ndim - 1))
    mean = np.atleast_1d(x.mean(axis=axes))
    std = np.atleast_1d(x.std(axis=axes))
    return tuple(float(round(v, 4)) for v in mean), tuple(float(round(v, 4)) for v in std)


def load_digits_dataset(data_dir=None) -> ArrayDataset:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    test = (np.arange(len(y)) % 5) == 0
    mean, std = _stats(x[~test])
    return ArrayDataset("digits", x[~test], y[~test], x[test], y[test], 10, mean, std)


def _read_idx_gz(path: Path, expect_ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DatasetError(f"cannot read ({exc}); reinstall with `{FASHION_MNIST_INSTALL}`",
                           path=path) from exc
    ndim = raw[3]
    if raw[2] != 0x08 or ndim != expect_ndim:
        raise DatasetError(f"not an IDX uint8 file with {expect_ndim} dims", path=path)
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"truncated: {data.size} values for shape {shape}", path=path)
    return data.reshape(shape)


def load_fashion_mnist_dataset(data_dir=None) -> ArrayDataset:
    root = Path(data_dir or os.environ.get("AS3L_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    files = {k: root / f"{k}-ubyte.gz" for k in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetError(f"Fashion-MNIST files missing ({', '.join(missing)}); install them "
                           f"with `{FASHION_MNIST_INSTALL}` or point --data-dir / "
                           "AS3L_FASHION_MNIST_DIR at a folder holding them", path=root)
    xtr = _read_idx_gz(files["train-images-idx3"], 3)
    ytr = _read_idx_gz(files["train-labels-idx1"], 1).astype(np.int64)
    xte = _read_idx_gz(files["t10k-images-idx3"], 3)
    yte = _read_idx_gz(files["t10k-labels-idx1"], 1).astype(np.int64)
    mean, std = _stats(xtr)
    return ArrayDataset("fashion_mnist", xtr, ytr, xte, yte, 10, mean, std)


LOADERS: Dict[str, Callable[..., ArrayDataset]] = {
    "digits": load_digits_dataset,
    "fashion_mnist": load_fashion_mnist_dataset,
}


def list_datasets() -> list:
    return sorted(LOADERS)


def load_dataset(name: str, data_dir=None) -> ArrayDataset:
    """Load a dataset by name (see module docstring). Unknown names list the known ones."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}",
                           field="dataset") from None
    return loader(data_dir)
