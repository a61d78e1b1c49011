"""File formats and atomic writes.

Every file the plugin writes goes through :func:`atomic_write_bytes`: the bytes go to a
temporary file in the destination directory, are fsync'ed, and the temporary file is renamed
over the destination. A crash or a failing write (full disk, read-only directory) leaves the
previous file untouched and no partial file behind.

Formats
-------
- features: ``.npy``, 2-D float array ``(n, d)``; loaded as float32 (C order).
- label index: ``.npy`` int64 ``(budget,)``, named like USB's own dump
  ``lb_labels{budget}_{lb_imb_ratio}_seed{seed}_idx.npy`` (plus the complement
  ``ulb_labels..._idx.npy``).
- prior: ``.npy`` float32 ``(n, num_classes)``, rows sum to 1, in the dataset's original order.
- sidecar: ``<file>.json`` next to an index or prior, written *after* the file it
  describes; a data file without its sidecar is an unfinished output. The keys of the
  index's and the prior's sidecars, and their one builder and writer, are in
  :mod:`as3l_plugin.artifacts`.
"""

from __future__ import annotations

import csv
import hashlib
import io as _io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import InputError, OutputError, StaleInputError

SIDECAR_SUFFIX = ".json"


# --------------------------------------------------------------------------- atomic writes
def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename).

    Raises
    ------
    OutputError
        The directory is missing or not writable, or the write failed (e.g. disk full).
        Nothing is left behind and an existing ``path`` is untouched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError("output directory does not exist; create it first", path=parent)
    fd = None
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as fh:
            fd = None
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except PermissionError as exc:
        raise OutputError(f"cannot write here ({exc.strerror}); choose a writable --out",
                          path=path) from exc
    except OSError as exc:
        raise OutputError(f"write failed ({exc.strerror or exc}); the previous file, if any, "
                          "is unchanged", path=path) from exc
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    try:  # make the rename durable; not all filesystems allow fsync on a directory
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def atomic_save_npy(path, array: np.ndarray) -> Path:
    """Save ``array`` as ``.npy`` atomically (no pickles)."""
    buf = _io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj: Mapping[str, Any]) -> Path:
    """Write ``obj`` as pretty, key-sorted JSON (byte-identical for equal content)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Path:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(header))
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- reading
def load_npy(path, *, what: str = "array") -> np.ndarray:
    """Load a ``.npy`` file with clear errors for missing, non-.npy and truncated files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found", path=path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            if magic != b"\x93NUMPY":
                raise InputError(f"not a .npy file (expected a NumPy {what} saved with np.save)",
                                 path=path)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(f"cannot read {what}: file is truncated or corrupt ({exc})",
                         path=path) from exc


def check_features(X, *, name: str = "features", path=None) -> np.ndarray:
    """Validate a feature matrix and return it as C-contiguous float32.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Real-valued; every entry finite; at least one row and one column.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"expected a 2-D array (n_samples, n_features), got shape {X.shape}",
                         path=path, field=name)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"is empty (shape {X.shape})", path=path, field=name)
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise InputError(f"expected a float array, got dtype {X.dtype}", path=path, field=name)
    X = np.ascontiguousarray(X, dtype=np.float32)
    # row blocks keep the temporary boolean array small (n*d bytes at 1M x 512 otherwise)
    bad = np.zeros(X.shape[0], dtype=bool)
    step = max(1, (1 << 22) // X.shape[1])
    for s in range(0, X.shape[0], step):
        bad[s:s + step] = ~np.isfinite(X[s:s + step]).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(f"{rows.size} row(s) contain NaN or inf (first rows: "
                         f"{rows[:5].tolist()}); clean or drop them", path=path, field=name)
    return X


def load_features(path) -> np.ndarray:
    """Load and validate a features ``.npy`` file → float32 ``(n, d)``."""
    return check_features(load_npy(path, what="features"), path=path)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_array(X: np.ndarray) -> str:
    """Checksum of an array's dtype, shape and bytes (independent of how it was stored)."""
    X = np.ascontiguousarray(X)
    h = hashlib.sha256()
    h.update(f"{X.dtype.str}{X.shape}".encode())
    flat = X.reshape(-1)  # a view of a C-contiguous array: hashed in blocks, never copied
    step = max(1, (1 << 24) // max(1, X.itemsize))
    for s in range(0, flat.size, step):
        h.update(flat[s:s + step].data)
    return h.hexdigest()


def sha256_file_list(paths: Iterable[str]) -> str:
    """Checksum of an ordered list of relative file paths (``/``-separated, UTF-8, one per
    line). The one identity of an image folder's file list: the row order of a ``folder``
    dataset, recorded in the sidecars of features, indices and priors made from it."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------- names, sidecars
def index_filename(budget: int, seed: int, lb_imb_ratio=1, prefix: str = "lb") -> str:
    """USB's name for a labeled (``prefix='lb'``) or unlabeled (``'ulb'``) index file."""
    return f"{prefix}_labels{int(budget)}_{lb_imb_ratio}_seed{int(seed)}_idx.npy"


def sidecar_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_with_sidecar(path, array: np.ndarray, meta: Mapping[str, Any]) -> Path:
    """Write ``array`` then its sidecar (the sidecar last: its presence marks completion)."""
    atomic_save_npy(path, array)
    atomic_write_json(sidecar_path(path), dict(meta))
    return Path(path)


def read_sidecar(path, *, required: bool = True) -> dict | None:
    """Read the JSON sidecar of ``path``; a missing one means the output is unfinished."""
    sc = sidecar_path(path)
    if not sc.is_file():
        if required:
            raise StaleInputError(f"has no sidecar {sc.name}; the file is unfinished or was not "
                                  "written by as3l — re-run the step that makes it", path=path)
        return None
    try:
        return json.loads(sc.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"sidecar is not valid JSON ({exc})", path=sc) from exc


def find_index(select_dir, *, field: str = "--select-dir") -> Path:
    """The one ``lb_labels*_idx.npy`` of a selection directory (``as3l select --out``)."""
    select_dir = Path(select_dir)
    if not select_dir.is_dir():
        raise InputError("selection directory not found (run `as3l select --out` first)",
                         path=select_dir, field=field)
    found = sorted(p for p in select_dir.glob("lb_labels*_idx.npy"))
    if not found:
        raise InputError("holds no lb_labels*_idx.npy index; run `as3l select --out` first",
                         path=select_dir, field=field)
    if len(found) > 1:
        raise InputError(f"holds {len(found)} index files ({', '.join(p.name for p in found)});"
                         " pass the one you annotated with --index", path=select_dir,
                         field=field)
    return found[0]
