"""Start-up checks of a training run's input files, before anything is written.

:func:`check_run_inputs` is called by :func:`as3l_plugin.usb.train.main` before the run
folder is touched (USB deletes an existing ``<save_dir>/<save_name>`` when ``overwrite`` is
set, and its logger creates ``log.txt``): a bad ``lb_index_file`` or ``prior_file`` stops the
run with one :class:`~as3l_plugin.errors.AS3LError` and leaves an earlier run folder as it was.

What is checked
---------------
- ``num_classes``: the dataset's class count (the plugin's datasets, and USB's in
  :data:`as3l_plugin.config.USB_NUM_CLASSES`).
- ``lb_index_file``: exists, ``.npy``, 1-D integer, unique, ``len == num_labels``, in range
  of the pool (plugin datasets: the pool size is known up front; USB's datasets are checked
  again when they are built). Its sidecar (written by ``as3l select`` / ``as3l run``), when
  present, must describe a pool of the same size.
- ``prior_file`` (``as3l_flexmatch``): the keys (:func:`~.algorithm.check_prior_args`) and
  the matrix (:func:`~.dataset.check_prior_file`: rows = pool size when known, columns =
  ``num_classes``, finite, non-negative, rows summing to 1 within 1e-3). Its sidecar, when
  present (the one schema of :mod:`as3l_plugin.artifacts`, written by ``as3l prior`` and
  ``as3l run``), must agree with the config (``n``, ``num_classes``) and name the *same
  labeled set* as ``lb_index_file`` (``labeled_idx_sha256``:
  :func:`~as3l_plugin.io.sha256_array` of the indices, or ``index_sha256``: the index file's
  SHA-256; older ``as3l prior`` sidecars have only the latter). A prior propagated from one
  labeled set and trained with another is refused
  (:class:`~as3l_plugin.errors.StaleInputError`); a prior whose sidecar names an index while
  ``lb_index_file`` is unset is a :class:`~as3l_plugin.errors.ConfigError` (USB would draw
  a random labeled set that the prior knows nothing about).
- ``dataset: folder``: a sidecar recording ``dataset_files_sha256`` (the file list the index /
  prior was made from) must match the folder's current file list (:func:`check_file_list`).
- A prior *without* a sidecar (made outside the plugin) is accepted with a warning: its shape
  and values are checked, its provenance cannot be.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import ConfigError, PriorError, StaleInputError


def pool_info(args):
    """``(n_samples, num_classes)`` of the training pool when known without building USB's
    datasets (the plugin's embedded datasets), else ``(None, None)``."""
    ds = pool_dataset(args)
    return (None, None) if ds is None else (len(ds.y_train), ds.num_classes)


def pool_dataset(args):
    """The plugin dataset of the config (an ``ArrayDataset``), or None for USB's datasets."""
    from .datasets import PLUGIN_DATASETS, load_plugin_dataset
    if getattr(args, "dataset", None) not in PLUGIN_DATASETS:
        return None
    return load_plugin_dataset(args)


def check_file_list(side: dict, files_sha256, *, path, what: str) -> None:
    """Refuse a file made from an image folder whose file list has changed since: its sidecar's
    ``dataset_files_sha256`` (:func:`~as3l_plugin.io.sha256_file_list` of the rows' paths)
    must equal the folder's now. No-op when either side has no file list (other datasets)."""
    made = (side or {}).get("dataset_files_sha256")
    if made and files_sha256 and made != files_sha256:
        raise StaleInputError(
            f"this {what} was made from another list of images (file-list sha256 {made[:12]}…, "
            f"now {files_sha256[:12]}…): images were added, removed or renamed since, so its "
            "rows no longer match the dataset's; re-run `as3l features` / `as3l select` / "
            "`as3l prior` on the folder as it is", path=path, field="dataset_files_sha256")


def _index_identity_matches(side: dict, lb_file: str, lb: np.ndarray):
    """True / False when the prior's sidecar names a labeled set (one of
    :data:`~as3l_plugin.artifacts.LABELED_SET_KEYS`), None when it names none.

    ``labeled_idx_sha256`` (the indices, however they are stored) or ``index_sha256`` (the
    index file's bytes) matching is enough: sidecars of ``as3l prior`` written before the
    one schema (:mod:`as3l_plugin.artifacts`) carry only ``index_sha256``."""
    from ..artifacts import names_labeled_set
    from ..io import sha256_array, sha256_file
    if not names_labeled_set(side):
        return None
    if side.get("labeled_idx_sha256") and \
            sha256_array(np.asarray(lb, np.int64)) == side["labeled_idx_sha256"]:
        return True
    return bool(side.get("index_sha256")) and sha256_file(lb_file) == side["index_sha256"]


def check_run_inputs(args) -> dict:
    """Validate ``lb_index_file`` / ``prior_file`` of a parsed config (see the module docstring).

    Returns
    -------
    dict with ``n`` (pool size or None), ``lb`` (int64 indices or None), ``prior``
    (float32 ``(n, C)`` or None).

    Raises
    ------
    ConfigError, InputError, PriorError, StaleInputError
    """
    from ..artifacts import names_labeled_set, read_artifact_sidecar
    from ..io import sidecar_path
    from ..artifacts import load_lb_index
    from ..config import USB_NUM_CLASSES
    ds = pool_dataset(args)
    n, C = (None, None) if ds is None else (len(ds.y_train), ds.num_classes)
    files = None if ds is None else ds.files_sha256
    C = USB_NUM_CLASSES.get(getattr(args, "dataset", None)) if C is None else C
    if C is not None and int(args.num_classes) != C:
        raise ConfigError(f"num_classes={args.num_classes} but {args.dataset} has {C} classes; "
                          f"set num_classes: {C}", path=getattr(args, "c", None) or None,
                          field="num_classes")
    lb_file = getattr(args, "lb_index_file", None) or None
    lb = None
    if lb_file:
        lb = load_lb_index(lb_file, n_samples=n, num_labels=args.num_labels)
        side = read_artifact_sidecar(lb_file, required=False) or {}
        if n is not None and side.get("n") not in (None, n):
            raise StaleInputError(
                f"was selected from {side['n']} samples but the {args.dataset} training pool "
                f"has {n}; re-run `as3l select` on features of this dataset",
                path=lb_file, field="lb_index_file")
        check_file_list(side, files, path=lb_file, what="selection")

    prior = None
    if getattr(args, "algorithm", None) == "as3l_flexmatch":
        from .algorithm import check_prior_args
        from .prior_data import check_prior_file
        from ..errors import InputError
        from ..io import load_npy
        cfg = check_prior_args(args)
        try:
            p = load_npy(cfg.file, what="prior")
        except InputError as exc:
            raise PriorError(exc.message, path=cfg.file, field="prior_file") from None
        rows = n if n is not None else (p.shape[0] if p.ndim == 2 else -1)
        prior = check_prior_file(p, n_samples=rows, num_classes=int(args.num_classes),
                                 path=cfg.file)
        side = read_artifact_sidecar(cfg.file, required=False)
        if side is None:
            warnings.warn(f"{cfg.file}: prior_file has no sidecar {sidecar_path(cfg.file).name}; "
                          "its shape and values are checked, not which labeled set or features "
                          "it was made from", stacklevel=2)
        else:
            sc = sidecar_path(cfg.file)
            if side.get("num_classes") not in (None, int(args.num_classes)):
                raise StaleInputError(f"the prior was made for {side['num_classes']} classes but "
                                      f"num_classes={args.num_classes}", path=sc, field="num_classes")
            check_file_list(side, files, path=cfg.file, what="prior")
            made_from = side.get("index_file") or "the selection it was propagated from"
            if lb_file is None and names_labeled_set(side):
                raise ConfigError(
                    f"prior_file {cfg.file} was propagated from the labels of {made_from}; set "
                    "lb_index_file to that index so USB trains on the same labeled samples",
                    field="lb_index_file")
            if lb_file is not None and _index_identity_matches(side, lb_file, lb) is False:
                raise StaleInputError(
                    f"the prior was propagated from another labeled set ({made_from}) than "
                    f"lb_index_file={lb_file}; re-run `as3l prior` for this selection or point "
                    "lb_index_file at the index the prior was made from",
                    path=sc, field="index_sha256")
    return {"n": n, "lb": lb, "prior": prior}


def check_output_dir(args) -> None:
    """``save_dir`` must be creatable/writable before USB starts (it would fail mid-way)."""
    from ..errors import OutputError
    root = os.path.abspath(str(getattr(args, "save_dir", ".") or "."))
    probe = root
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OutputError("is not a directory", path=probe, field="save_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError("is not writable; choose another save_dir", path=probe,
                          field="save_dir")
