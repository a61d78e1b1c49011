"""Backbone features of a dataset split: ``f_self`` in the paper.

The images go through the same normalisation as in pretraining (the ``mean``/``std`` stored
in ``backbone.pth``, the dataset's), at the dataset's native size, with the backbone in eval
mode; rows follow dataset order. Batches are fixed-size slices in order, so the output depends
only on the checkpoint and the data.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import InputError, ParameterError

SPLITS = ("train", "test")


def extract_features(checkpoint, dataset=None, *, split: str = "train", batch_size: int = 512,
                     device: str = "cpu", data_dir=None, net: Optional[str] = None,
                     progress: bool = True) -> np.ndarray:
    """Features ``backbone(x, only_feat=True)`` of every image of a split.

    Parameters
    ----------
    checkpoint : str or Path
        ``backbone.pth`` written by :func:`pretrain_simsiam` (or its directory).
    dataset : str or ArrayDataset, optional
        Default: the dataset the checkpoint was pretrained on.
    split : {'train', 'test'}
    batch_size : int
    device : str or torch.device
        Where the backbone runs (``'cpu'``, ``'cuda'``, ``'cuda:1'``); CUDA on a machine
        without it is a :class:`ParameterError`.
    data_dir : str, optional
    net : str, optional
        Expected net; a checkpoint of another net raises :class:`InputError`.
    progress : bool

    Returns
    -------
    ndarray of float32, shape (n, num_features)
        In dataset order.

    Raises
    ------
    InputError
        Unreadable checkpoint, another net, or images that do not fit the checkpoint
        (channels or size).
    """
    import torch
    from tqdm.auto import tqdm

    from .backbone import input_channels, load_backbone
    from .pretrain import InputPipeline, _dataset

    if split not in SPLITS:
        raise ParameterError(f"split={split!r}; allowed: {', '.join(SPLITS)}", field="split")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ParameterError(f"batch_size={batch_size!r} must be an int >= 1", field="batch_size")
    from ..validate import check_device
    dev = check_device(device)
    backbone, meta = load_backbone(checkpoint, net=net)
    ds = _dataset(dataset if dataset is not None else meta.get("dataset"), data_dir)
    if meta.get("in_channels") is not None and int(meta["in_channels"]) != ds.in_channels:
        raise InputError(f"checkpoint was pretrained on {meta['in_channels']}-channel images "
                         f"({meta.get('dataset')}), dataset {ds.name!r} has "
                         f"{ds.in_channels} channels",
                         path=meta["path"], field="dataset")
    x = ds.x_train if split == "train" else ds.x_test
    mean, std = meta.get("mean") or ds.mean, meta.get("std") or ds.std
    pipe = InputPipeline(mean, std, input_channels(backbone), channels_last=True)
    backbone = backbone.to(dev).to(memory_format=torch.channels_last).eval()
    images = torch.from_numpy(np.array(x, copy=True))
    out = np.empty((len(x), int(backbone.num_features)), dtype=np.float32)
    with torch.inference_mode():
        for s in tqdm(range(0, len(x), batch_size), desc=f"features {split}",
                      disable=not progress, leave=False):
            xb = pipe(images[s:s + batch_size].to(dev))
            out[s:s + len(xb)] = backbone(xb, only_feat=True).float().cpu().numpy()
    if not np.isfinite(out).all():
        raise InputError("backbone produced NaN/inf features; the checkpoint is broken "
                         "(diverged pretraining?)", path=meta["path"])
    return out


def features_sidecar(checkpoint, dataset: str, split: str, X: np.ndarray, meta=None) -> dict:
    """The JSON sidecar written next to a features file."""
    from pathlib import Path

    from .. import __version__
    from ..io import sha256_array, sha256_file
    ck = Path(checkpoint)
    ck = ck / "backbone.pth" if ck.is_dir() else ck
    meta = meta or {}
    files = {"dataset_files_sha256": meta["dataset_files_sha256"]} \
        if meta.get("dataset_files_sha256") else {}  # folder datasets: their file list
    return {**files, "kind": "features", "stage": "f_self", "dataset": dataset, "split": split,
            "n": int(X.shape[0]), "dim": int(X.shape[1]), "net": meta.get("net"),
            "num_classes": meta.get("num_classes"), "checkpoint": str(ck),
            "checkpoint_sha256": sha256_file(ck), "features_sha256": sha256_array(X),
            "version": __version__}
