"""Small argument checks shared by the library, the samplers, the propagators and the USB
algorithm (one place for each rule; every caller keeps its own error type and wording)."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import ParameterError

__all__ = ["check_device", "check_index_set", "check_int"]


def check_int(value, name: str, *, low: int | None = None, high: int | None = None,
              error=ParameterError, named: bool = True, loose: bool = False) -> int:
    """``value`` as an ``int``, or ``error`` (field ``name``) when it is not one or is out of
    ``[low, high]`` (either bound optional).

    Parameters
    ----------
    error : AS3LError subclass, default ParameterError
        The exception raised (``ConfigError`` for config keys).
    named : bool, default True
        Wording: ``"{name}={value!r} must be an int"`` / ``"{name}={v} must be >= {low}"``
        when true; ``"expected an integer, got {value!r}"`` / ``"={v} must be >= {low}"``
        when false (the field prefix names the parameter). A two-sided range reads
        ``"in [{low}, {high}]"`` instead of ``">= {low}"``.
    loose : bool, default False
        False: only integers (``int`` or numpy integers; ``bool`` refused). True: anything
        ``float()`` reads as a whole number (``"6900"``, ``6900.0``; Python ``bool``
        refused), as YAML config values may be.
    """
    v = None
    if loose:
        try:
            if not isinstance(value, bool):
                f = float(value)
                if f.is_integer():
                    v = int(f)
        except (TypeError, ValueError):
            pass
    elif not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral):
        v = int(value)
    if v is None:
        msg = f"{name}={value!r} must be an int" if named else f"expected an integer, got {value!r}"
        raise error(msg, field=name)
    if (low is not None and v < low) or (high is not None and v > high):
        if high is None:
            rng = f">= {low}"
        elif low is None:
            rng = f"<= {high}"
        else:
            rng = f"in [{low}, {high}]"
        raise error(f"{name}={v} must be {rng}" if named else f"={v} must be {rng}", field=name)
    return v


def check_device(value, name: str = "device", *, error=ParameterError, path=None):
    """``value`` (``'cpu'``, ``'cuda'``, ``'cuda:1'``, a ``torch.device``) as a
    ``torch.device`` that this machine has, or ``error`` (field ``name``, file ``path``).

    Asking for CUDA where ``torch.cuda.is_available()`` is False (or for a CUDA index past
    ``torch.cuda.device_count()``) is an error, never a silent fall-back to the CPU.
    """
    import torch
    try:
        dev = value if isinstance(value, torch.device) else torch.device(str(value).strip())
    except (RuntimeError, TypeError, ValueError):
        raise error(f"{name}={value!r} is not a torch device; use cpu, cuda or cuda:N",
                    path=path, field=name) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"{name}={value!r} asks for CUDA but torch.cuda.is_available() is False "
                        f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); use "
                        f"{name}=cpu or a machine/torch build with CUDA", path=path, field=name)
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise error(f"{name}={value!r} but this machine has {count} CUDA device(s) "
                        f"(cuda:0..cuda:{count - 1})", path=path, field=name)
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise error(f"{name}={value!r} asks for MPS but torch.backends.mps.is_available() "
                        f"is False; use {name}=cpu", path=path, field=name)
    elif dev.type != "cpu":
        raise error(f"{name}={value!r}: device type {dev.type!r} is not supported; use cpu, "
                    "cuda or cuda:N", path=path, field=name)
    return dev


#: default wording of :func:`check_index_set` (``str.format`` fields: ``noun``, ``shape``,
#: ``dtype``, ``n``, ``n_bad``, ``bad`` (the first five out of range), ``bad_one`` (the
#: first), ``n_dup``, ``dup`` (the first five duplicated), ``dup_one``)
INDEX_SET_MESSAGES = {
    "ndim": "expected a 1-D array of {noun}, got shape {shape}",
    "empty": "is empty",
    "dtype": "expected integer {noun}, got dtype {dtype}",
    "range": "{n_bad} row number(s) out of range [0, {n}) (first: {bad})",
    "duplicate": "contains duplicates (e.g. {dup})",
}


def check_index_set(idx, n: int | None, *, allow_empty: bool = True, typed_empty: bool = False,
                    error=ParameterError, field: str | None = "labeled_idx", path=None,
                    noun: str = "row numbers", messages=None) -> np.ndarray:
    """``idx`` as a 1-D int64 array of unique row numbers in ``[0, n)``, or ``error``.

    The checks run in this order, each with its message (:data:`INDEX_SET_MESSAGES`, entries
    replaced by ``messages``): ``ndim`` (not 1-D), ``empty`` (no index while ``allow_empty``
    is false), ``dtype`` (not integers; an empty array passes unless ``typed_empty``, as
    ``np.asarray([])`` is float), ``range`` (outside ``[0, n)``; ``n=None`` checks only
    ``>= 0``), ``duplicate``. The order of the indices is kept.
    """
    msg = {**INDEX_SET_MESSAGES, **(messages or {})}
    a = np.asarray(idx)
    info = {"noun": noun, "shape": a.shape, "dtype": a.dtype, "n": n}

    def fail(kind: str, **extra):
        raise error(msg[kind].format(**info, **extra), path=path, field=field)

    if a.ndim != 1:
        fail("ndim")
    if a.size == 0 and not allow_empty:
        fail("empty")
    if (a.size or typed_empty) and not np.issubdtype(a.dtype, np.integer):
        fail("dtype")
    a = a.astype(np.int64)
    hi = np.iinfo(np.int64).max if n is None else n
    bad = (a < 0) | (a >= hi)
    if bad.any():
        b = a[bad]
        fail("range", n_bad=int(bad.sum()), bad=b[:5].tolist(), bad_one=int(b[0]))
    uniq, counts = np.unique(a, return_counts=True)
    if uniq.size != a.size:
        d = uniq[counts > 1]
        fail("duplicate", n_dup=int(d.size), dup=d[:5].tolist(), dup_one=int(d[0]))
    return a
