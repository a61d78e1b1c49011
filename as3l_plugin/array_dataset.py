"""The record every dataset loader returns (:class:`ArrayDataset`).

Its own module so that :mod:`as3l_plugin.datasets` (every loader, by name) and
:mod:`as3l_plugin.user_datasets` (the ``folder`` / ``arrays`` loaders it dispatches to) both
build it while the imports point one way: ``datasets`` -> ``user_datasets`` ->
``array_dataset``. ``from as3l_plugin.datasets import ArrayDataset`` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["ArrayDataset"]


@dataclass(frozen=True)
class ArrayDataset:
    """One dataset as NumPy arrays (shapes and dtypes: :mod:`as3l_plugin.datasets`)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    #: class names in class-id order (``()`` when the loader has none)
    classes: tuple = ()
    #: ``folder``: the train rows' image paths relative to ``data_dir`` (sorted), else None
    paths: Optional[tuple] = None
    #: ``folder``: the test rows' image paths, else None
    test_paths: Optional[tuple] = None
    #: ``folder``: :func:`as3l_plugin.io.sha256_file_list` of ``paths`` (the row order), else None
    files_sha256: Optional[str] = None

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def in_channels(self) -> int:
        return 1 if self.x_train.ndim == 3 else int(self.x_train.shape[-1])
