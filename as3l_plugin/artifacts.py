"""The one schema of the offline stage's files: the label index and the prior, with sidecars.

``as3l select`` / ``as3l prior`` (:mod:`as3l_plugin.offline`) and the ``select`` /
``baseline_select`` / ``prior`` stages of ``as3l run`` (:mod:`as3l_plugin.pipeline`) build
their sidecars with :func:`selection_meta` / :func:`prior_meta` and write them with
:func:`write_selection` / :func:`write_prior`: the data files first, each atomically, the
sidecar last (:func:`~as3l_plugin.io.write_with_sidecar`), so an index or prior without its
sidecar is an unfinished output. ``as3l train``'s start-up checks
(:mod:`as3l_plugin.usb.checks`) read this one schema; the labeled index is read and checked
by :func:`load_lb_index` (for `as3l train` and the USB dataset builders).

Selection sidecar (``lb_labels{B}_1_seed{S}_idx.npy.json``, ``kind: as3l-selection``)
--------------------------------------------------------------------------------------
Always present (``null`` where the producer does not know the value):

- ``kind``, ``format_version`` (:data:`FORMAT_VERSION`; read by
  :func:`read_artifact_sidecar`, which refuses a newer one), ``package_version``, ``dataset`` (name or null), ``n`` (pool size),
  ``num_features``, ``num_classes`` (when known: simulation labels, the features' sidecar).
- ``sampler``, ``params`` (as given), ``params_effective`` (the sampler's hyper-parameters;
  null for ``stratified``), ``budget``, ``seed``, ``lb_imb_ratio`` (1), ``index_order``.
- ``features``: the feature set of ``as3l run`` (``self``, ``fine``, ``pixels``; the pick of
  ``auto``), null for ``as3l select``; ``features_file``: the feature file's absolute path
  (``as3l select``), null for features made inside ``as3l run``. ``features_sha256``:
  :func:`~as3l_plugin.io.sha256_array` of the float32 matrix (described by
  ``features_checksum``) — the features' identity whichever producer wrote it.
- ``lb_index_file``, ``ulb_index_file`` (null when no complement is written: ``as3l run``),
  ``annotation_file`` (``to_annotate.csv``), ``labels_prefilled``, ``labels_file``.

Present only when they apply: ``features_choice`` (``auto``: criterion, scores, pick),
``class_coverage`` (simulation labels given), ``dataset_files_sha256`` (``folder`` data: the
file list the rows follow).

Prior sidecar (``prior.npy.json``, ``kind: as3l-prior``)
--------------------------------------------------------
Always present: ``kind``, ``format_version``, ``package_version``, ``dataset``, ``n``,
``num_classes``,
``budget``, ``propagator``, ``params``, ``params_effective``, ``seed``, ``coverage``,
``n_uniform``, ``sampler`` / ``selection_seed`` (of the selection, from its sidecar),
``features`` / ``features_file`` / ``features_sha256`` (as above), ``index_file`` (absolute
path) and the labeled set's identity (:data:`LABELED_SET_KEYS`): ``labeled_idx_sha256``
(:func:`~as3l_plugin.io.sha256_array` of the int64 indices, however they are stored) and
``index_sha256`` (the index file's SHA-256), ``labels_source`` (``oracle`` / ``csv`` for
``as3l prior``; ``dataset`` / ``csv`` / ``annotate`` for ``as3l run``), ``labels_file``,
``labels_sha256``, ``labeled_per_class``. Present only when they apply:
``features_choice``, ``dataset_files_sha256``.

Older sidecars: releases before ``format_version`` wrote none (version 0: the same keys);
``as3l prior`` before this schema wrote no ``labeled_idx_sha256`` (its
``index_sha256`` names the labeled set), ``as3l run`` wrote neither ``features_file`` nor
the selection's ``sampler``; readers treat a missing key as null, so those files still pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

SELECTION_KIND = "as3l-selection"
PRIOR_KIND = "as3l-prior"

#: version of the index / prior sidecar schema written by this release; a sidecar without the
#: key is version 0 (written before it existed: same keys, read the same way)
FORMAT_VERSION = 1

FEATURES_CHECKSUM = ("io.sha256_array of the float32 C-order feature matrix "
                     "(dtype, shape and bytes)")

#: keys of a prior's sidecar naming the labeled set it was propagated from, newest first
LABELED_SET_KEYS = ("labeled_idx_sha256", "index_sha256")

#: keys written only when they apply (see the module docstring)
OPTIONAL_KEYS = frozenset({"features_choice", "class_coverage", "dataset_files_sha256"})

SELECTION_KEYS = frozenset({
    "kind", "format_version", "package_version", "dataset", "n", "num_features", "num_classes", "sampler",
    "params", "params_effective", "budget", "seed", "lb_imb_ratio", "index_order", "features",
    "features_file", "features_sha256", "features_checksum", "lb_index_file", "ulb_index_file",
    "annotation_file", "labels_prefilled", "labels_file"})

PRIOR_KEYS = frozenset({
    "kind", "format_version", "package_version", "dataset", "n", "num_classes", "budget", "propagator", "params",
    "params_effective", "seed", "coverage", "n_uniform", "sampler", "selection_seed",
    "features", "features_file", "features_sha256", "index_file", "labeled_idx_sha256",
    "index_sha256", "labels_source", "labels_file", "labels_sha256", "labeled_per_class"})


# --------------------------------------------------------------------------- values
def jsonable(v):
    """``v`` with tuples as lists, NumPy scalars as Python ones, other objects as repr."""
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def effective_params(obj, given: Mapping[str, Any]) -> dict:
    """Hyper-parameters of a sampler/propagator (get_params() or public attributes)."""
    if hasattr(obj, "get_params"):
        try:
            return jsonable(obj.get_params())
        except Exception:  # pragma: no cover - foreign objects
            pass
    public = {k: v for k, v in vars(obj).items()
              if not k.startswith("_") and not k.endswith("_")}
    return jsonable(public or dict(given))


def _path(p) -> Optional[str]:
    return None if p is None else str(Path(p).resolve())


def _version() -> str:
    from . import __version__
    return __version__


def read_artifact_sidecar(path, *, required: bool = True) -> Optional[dict]:
    """The sidecar of a label index or prior ``path`` (:func:`~as3l_plugin.io.read_sidecar`:
    missing = unfinished when ``required``), refused when its ``format_version`` is newer
    than this release reads (:data:`FORMAT_VERSION`; none = 0, the files of earlier
    releases, which read as they are)."""
    from .errors import StaleInputError
    from .io import read_sidecar, sidecar_path
    side = read_sidecar(path, required=required)
    if side is None:
        return None
    v = side.get("format_version", 0)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= FORMAT_VERSION:
        raise StaleInputError(f"format_version={v!r}: this as3l_plugin reads sidecars up to "
                              f"version {FORMAT_VERSION}; upgrade as3l_plugin or re-run the step "
                              "that wrote it", path=sidecar_path(path), field="format_version")
    return side


def names_labeled_set(side: Mapping[str, Any]) -> bool:
    """Whether a prior's sidecar names the labeled set it was propagated from."""
    return any(side.get(k) for k in LABELED_SET_KEYS)


# --------------------------------------------------------------------------- selection
def selection_meta(*, sampler: str, params: Mapping[str, Any], budget: int, seed: int,
                   n: int, num_features: int, features_sha256: str, dataset=None,
                   sampler_obj=None, num_classes=None, features=None, features_file=None,
                   features_choice=None, ulb_index_file=None, labels_prefilled=False,
                   labels_file=None, class_coverage=None, dataset_files_sha256=None) -> dict:
    """The sidecar of a label index (keys: see the module docstring)."""
    from .annotations import ANNOTATION_FILENAME
    from .io import index_filename
    params = dict(params or {})
    meta = {
        "kind": SELECTION_KIND, "format_version": FORMAT_VERSION, "package_version": _version(),
        "dataset": dataset,
        "n": int(n), "num_features": int(num_features),
        "num_classes": None if num_classes is None else int(num_classes),
        "sampler": sampler, "params": jsonable(params),
        "params_effective": None if sampler_obj is None else effective_params(sampler_obj,
                                                                              params),
        "budget": int(budget), "seed": int(seed), "lb_imb_ratio": 1,
        "index_order": "sampler order", "features": features,
        "features_file": _path(features_file), "features_sha256": features_sha256,
        "features_checksum": FEATURES_CHECKSUM,
        "lb_index_file": index_filename(budget, seed, prefix="lb"),
        "ulb_index_file": ulb_index_file, "annotation_file": ANNOTATION_FILENAME,
        "labels_prefilled": bool(labels_prefilled), "labels_file": _path(labels_file)}
    if features_choice is not None:
        meta["features_choice"] = features_choice
    if class_coverage is not None:
        meta["class_coverage"] = class_coverage
    if dataset_files_sha256:
        meta["dataset_files_sha256"] = dataset_files_sha256
    return meta


def write_selection(out_dir, idx, meta: Mapping[str, Any], *, labels=None, ulb=None,
                    image_paths=None) -> Path:
    """Write a selection into ``out_dir``: the complement ``ulb`` (when given, under
    ``meta['ulb_index_file']``), ``to_annotate.csv`` (label column filled with ``labels``
    when given; ``image_paths``: one per pool row, the ``path`` column), then the index in
    USB's naming and, last, its sidecar. Returns the index path."""
    from .annotations import ANNOTATION_FILENAME, HEADER, annotation_rows
    from .io import atomic_save_npy, atomic_write_csv, index_filename, write_with_sidecar
    out_dir = Path(out_dir)
    idx = np.asarray(idx)
    if ulb is not None:
        atomic_save_npy(out_dir / meta["ulb_index_file"], ulb)
    atomic_write_csv(out_dir / ANNOTATION_FILENAME, HEADER,
                     annotation_rows(idx, labels, paths=None if image_paths is None
                                     else [image_paths[i] for i in idx]))
    path = out_dir / index_filename(meta["budget"], meta["seed"])
    write_with_sidecar(path, idx, meta)
    return path


# --------------------------------------------------------------------------- prior
def prior_meta(*, n: int, num_classes: int, idx, labels, propagator: str,
               params: Mapping[str, Any], seed: int, features_sha256: str, index_file,
               index_sha256: str, labels_source: str, prop_obj=None, dataset=None,
               selection: Optional[Mapping[str, Any]] = None, features=None,
               features_file=None, features_choice=None, labels_file=None,
               labels_sha256=None, dataset_files_sha256=None) -> dict:
    """The sidecar of a prior propagated from the labels ``labels`` of the indices ``idx``
    (``selection``: the index's sidecar, for its sampler and seed; keys: module docstring)."""
    from .io import sha256_array
    params = dict(params or {})
    idx = np.asarray(idx, dtype=np.int64)
    sel = selection or {}
    meta = {
        "kind": PRIOR_KIND, "format_version": FORMAT_VERSION, "package_version": _version(),
        "dataset": dataset, "n": int(n),
        "num_classes": int(num_classes), "budget": int(idx.size), "propagator": propagator,
        "params": jsonable(params),
        "params_effective": None if prop_obj is None else effective_params(prop_obj, params),
        "seed": int(seed), "coverage": float(getattr(prop_obj, "coverage_", float("nan"))),
        "n_uniform": int(getattr(prop_obj, "n_uniform_", 0)),
        "sampler": sel.get("sampler"), "selection_seed": sel.get("seed"),
        "features": features, "features_file": _path(features_file),
        "features_sha256": features_sha256, "index_file": _path(index_file),
        "labeled_idx_sha256": sha256_array(idx), "index_sha256": index_sha256,
        "labels_source": labels_source, "labels_file": _path(labels_file),
        "labels_sha256": labels_sha256,
        "labeled_per_class": np.bincount(np.asarray(labels, dtype=np.int64),
                                         minlength=int(num_classes)).tolist()}
    if features_choice is not None:
        meta["features_choice"] = features_choice
    if dataset_files_sha256:
        meta["dataset_files_sha256"] = dataset_files_sha256
    return meta


def write_prior(path, prior, meta: Mapping[str, Any]) -> Path:
    """Write the prior ``.npy`` then, last, its sidecar."""
    from .io import write_with_sidecar
    return write_with_sidecar(path, prior, meta)


# --------------------------------------------------------------------------- readers
_LB_INDEX_MESSAGES = {
    "range": "{n_bad} index(es) out of range [0, {n}) (e.g. {bad_one}); the file was made for "
             "another dataset",
    "duplicate": "{n_dup} duplicated index(es) (e.g. {dup_one}); each labeled sample must "
                 "appear once",
}


def load_lb_index(path, *, n_samples: int, num_labels: int) -> np.ndarray:
    """Load and check a labeled-index file (``lb_index_file``).

    Parameters
    ----------
    path : str or PathLike
        ``.npy`` of integers (USB's ``lb_labels{B}_..._idx.npy`` format).
    n_samples : int or None
        Size of the pool the indices point into (e.g. 50000 for CIFAR-10's train split);
        None skips the range check (pool not built yet).
    num_labels : int
        The config's ``num_labels``; the file must hold exactly that many indices.

    Returns
    -------
    ndarray of int64, shape (num_labels,), in file order.

    Raises
    ------
    ConfigError
        The file does not exist.
    InputError
        Not a 1-D integer array, out of range, duplicates, or wrong count.
    """
    import os

    from .errors import ConfigError, InputError
    from .io import load_npy
    from .validate import check_index_set
    if path is None or not os.path.isfile(path):
        raise ConfigError("file not found (set lb_index_file to an index .npy written by the "
                          "offline stage, or remove the key for USB's random split)",
                          path=path, field="lb_index_file")
    idx = load_npy(path, what="labeled index")
    idx = check_index_set(idx, n_samples, typed_empty=True, error=InputError, path=path,
                          field="lb_index_file", noun="indices", messages=_LB_INDEX_MESSAGES)
    if idx.size != int(num_labels):
        raise InputError(f"holds {idx.size} indices but num_labels={num_labels}; set num_labels "
                         f"to {idx.size} or use the matching file", path=path,
                         field="lb_index_file")
    return idx
