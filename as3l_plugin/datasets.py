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

Datasets read from a user's copy (never downloaded)
---------------------------------------------------
``cifar10``, ``cifar100``, ``stl10``: USB's layout ``<data_dir>/<name>/`` (torchvision's
files, as semilearn downloads them); ``data_dir`` defaults to ``$AS3L_DATA_DIR`` or
``./data`` (USB's default). ``mean``/``std`` are USB's constants for these datasets. A
missing copy is a :class:`DatasetError`.

Your own images
---------------
``folder`` (``data_dir`` = a folder with ``train/``, optional ``test/<class>/`` and
``classes.txt``) and ``arrays`` (``data_dir`` = an ``.npz``): see
:mod:`as3l_plugin.user_datasets` for the layouts, the size rule, the cache and the errors.
They also fill ``classes``, and (folder) ``paths`` / ``test_paths`` / ``files_sha256``;
``y_train`` is -1 where a sample is unlabeled.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable, Dict

import numpy as np

from .array_dataset import ArrayDataset
from .errors import DatasetError
from .user_datasets import load_arrays_dataset, load_folder_dataset

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_INSTALL = "apt-get update && apt-get install -y dataset-fashion-mnist"


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


# --------------------------------------------------------------------------- USB's CV datasets
#: USB 0.3.2's normalisation constants (semilearn/datasets/cv_datasets), so SimSiam sees the
#: inputs the SSL stage will feed the same backbone
USB_STATS = {
    "cifar10": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar100": (tuple(round(v / 255, 4) for v in (129.3, 124.1, 112.4)),
                 tuple(round(v / 255, 4) for v in (68.2, 65.4, 70.4))),
    "stl10": (tuple(round(v / 255, 4) for v in (112.4, 109.1, 98.6)),
              tuple(round(v / 255, 4) for v in (68.4, 66.6, 68.5))),
}


def _usb_root(name: str, data_dir) -> Path:
    """USB's layout: ``<data_dir>/<name>/`` (``data_dir`` default ``$AS3L_DATA_DIR`` or ./data)."""
    return Path(data_dir or os.environ.get("AS3L_DATA_DIR") or "./data") / name


def _torchvision(name: str, data_dir, make):
    root = _usb_root(name, data_dir)
    try:
        return make(str(root))
    except (RuntimeError, OSError) as exc:  # torchvision: "Dataset not found or corrupted"
        raise DatasetError(f"{name} not found or corrupted ({exc}); put USB's "
                           f"copy there (torchvision layout, as semilearn downloads it) or "
                           "pass --data-dir / set AS3L_DATA_DIR to the folder holding "
                           f"{name}/", path=root) from exc


def _cifar(name: str, data_dir) -> ArrayDataset:
    from torchvision import datasets as tvd
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    tr = _torchvision(name, data_dir, lambda r: cls(r, train=True, download=False))
    te = _torchvision(name, data_dir, lambda r: cls(r, train=False, download=False))
    mean, std = USB_STATS[name]
    return ArrayDataset(name, np.asarray(tr.data, dtype=np.uint8),
                        np.asarray(tr.targets, dtype=np.int64),
                        np.asarray(te.data, dtype=np.uint8), np.asarray(te.targets, dtype=np.int64),
                        10 if name == "cifar10" else 100, mean, std)


def load_cifar10_dataset(data_dir=None) -> ArrayDataset:
    """CIFAR-10 (50,000 / 10,000 RGB 32x32) from ``<data_dir>/cifar10`` (never downloads)."""
    return _cifar("cifar10", data_dir)


def load_cifar100_dataset(data_dir=None) -> ArrayDataset:
    """CIFAR-100 (50,000 / 10,000 RGB 32x32) from ``<data_dir>/cifar100``."""
    return _cifar("cifar100", data_dir)


def load_stl10_dataset(data_dir=None) -> ArrayDataset:
    """STL-10 from ``<data_dir>/stl10``: the 5,000 labeled ``train`` images (RGB 96x96) and
    the 8,000 ``test`` images. The 100,000 ``unlabeled`` images are not loaded (they have no
    labels to put in ``y_train``)."""
    from torchvision import datasets as tvd
    tr = _torchvision("stl10", data_dir, lambda r: tvd.STL10(r, split="train", download=False))
    te = _torchvision("stl10", data_dir, lambda r: tvd.STL10(r, split="test", download=False))
    mean, std = USB_STATS["stl10"]
    return ArrayDataset("stl10", np.ascontiguousarray(tr.data.transpose(0, 2, 3, 1)),
                        np.asarray(tr.labels, dtype=np.int64),
                        np.ascontiguousarray(te.data.transpose(0, 2, 3, 1)),
                        np.asarray(te.labels, dtype=np.int64), 10, mean, std)


LOADERS: Dict[str, Callable[..., ArrayDataset]] = {
    "digits": load_digits_dataset,
    "fashion_mnist": load_fashion_mnist_dataset,
}
#: datasets read from the user's USB data folder (listed after the embedded ones)
DATA_DIR_LOADERS: Dict[str, Callable[..., ArrayDataset]] = {
    "cifar10": load_cifar10_dataset,
    "cifar100": load_cifar100_dataset,
    "stl10": load_stl10_dataset,
}


#: your own images (:mod:`as3l_plugin.user_datasets`): ``data_dir`` is the folder / the .npz,
#: and they take the :data:`DATASET_OPTIONS`
USER_LOADERS: Dict[str, Callable[..., ArrayDataset]] = {
    "folder": load_folder_dataset,
    "arrays": load_arrays_dataset,
}
#: options of the :data:`USER_LOADERS` (config keys / ``--img-size``, ``--channels``,
#: ``--skip-bad-images``) and their defaults; the other loaders ignore them
DATASET_OPTIONS = {"img_size": None, "channels": None, "skip_bad_images": False}


def list_datasets() -> list:
    return sorted(LOADERS) + sorted(DATA_DIR_LOADERS) + sorted(USER_LOADERS)


def dataset_options(source) -> dict:
    """The :data:`DATASET_OPTIONS` read from a mapping or an object's attributes (a USB
    ``args`` namespace, a parsed command line), missing ones at their defaults."""
    get = source.get if isinstance(source, dict) else (lambda k, d: getattr(source, k, d))
    return {k: get(k, d) if get(k, d) is not None else d for k, d in DATASET_OPTIONS.items()}


def load_dataset(name: str, data_dir=None, *, progress: bool = True, **options) -> ArrayDataset:
    """Load a dataset by name (see module docstring). Unknown names list the known ones.

    ``options`` (:data:`DATASET_OPTIONS`: ``img_size``, ``channels``, ``skip_bad_images``) go
    to ``folder`` / ``arrays`` and are ignored by the built-in datasets; ``progress`` shows a
    bar while a folder's images are decoded (once: they are cached).
    """
    unknown = sorted(set(options) - set(DATASET_OPTIONS))
    if unknown:
        raise TypeError(f"load_dataset() got unknown option(s) {unknown}; "
                        f"known: {sorted(DATASET_OPTIONS)}")
    if name in USER_LOADERS:
        return USER_LOADERS[name](data_dir, progress=progress, **options)
    try:
        loader = LOADERS[name] if name in LOADERS else DATA_DIR_LOADERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}",
                           field="dataset") from None
    return loader(data_dir)


# --------------------------------------------------------------------------- class names
#: Class names of the built-in datasets whose loader carries none (position = class id).
#: A dataset object with a ``classes`` attribute (folder data) names its own classes.
CLASS_NAMES: Dict[str, tuple] = {
    "digits": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                      "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


def class_names(dataset, num_classes=None, data_dir=None) -> list:
    """Names of the classes, position = class id: ``list[str]`` of length ``num_classes``.

    ``dataset`` is a dataset object (its ``classes`` attribute when it has one) or a name
    (the :data:`CLASS_NAMES` table, else the loaded dataset's ``classes``); classes without
    a name are named by their id (``'3'``). ``num_classes`` defaults to the dataset's.
    """
    if isinstance(dataset, str):
        names = CLASS_NAMES.get(dataset)
        if names is None:
            dataset = load_dataset(dataset, data_dir)
    if not isinstance(dataset, str):
        names = getattr(dataset, "classes", None) or CLASS_NAMES.get(dataset.name)
        if num_classes is None:
            num_classes = dataset.num_classes
    names = [str(c) for c in (names or ())]
    if num_classes is None:
        num_classes = len(names)
    return names[:num_classes] + [str(i) for i in range(len(names), num_classes)]
