"""Small argument checks shared by the library, the samplers, the propagators and the USB
algorithm (one place for each rule; every caller keeps its own error type and wording).

The samplers' and propagators' hyper-parameters are declared as data
(``_parameter_constraints``, a dict ``name -> [None?, constraint]`` of :class:`Interval`,
:class:`Options` and :class:`Boolean`) and checked by the one :func:`check_params`.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import ParameterError

__all__ = ["Boolean", "Interval", "Options", "check_device", "check_index_set", "check_int",
           "check_params"]


def check_int(value, name: str, *, low: int | None = None, high: int | None = None,
              error=ParameterError, named: bool = True, loose: bool = False,
              message: str | None = None) -> int:
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
    message : str, optional
        One wording for every refusal instead: ``"{name}={value!r} {message}"`` (e.g.
        ``message="must be an int >= 1"``).
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
        if message is not None:
            raise error(f"{name}={value!r} {message}", field=name)
        msg = f"{name}={value!r} must be an int" if named else f"expected an integer, got {value!r}"
        raise error(msg, field=name)
    if (low is not None and v < low) or (high is not None and v > high):
        if message is not None:
            raise error(f"{name}={value!r} {message}", field=name)
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


# ---------------------------------------------------------------- declared hyper-parameters
class Interval:
    """A number of ``type`` (``int`` or ``numbers.Real``) between ``left`` and ``right``
    (``None``: unbounded); ``closed`` is ``'both'``, ``'left'``, ``'right'`` or ``'neither'``.

    ``int``: :func:`check_int`'s rule (``bool`` refused) and wording (``"k='a' must be an
    int"``, ``"k=0 must be >= 1"``), or, with ``message``, that one text for every refusal
    (``"k=np.int64(0) must be an int >= 1"``).
    ``Real``: a ``numbers.Real`` (``bool`` refused unless ``bool_ok``; NaN never in range;
    ``finite`` also refuses +-inf), refused as ``"{name}={value!r} must be a float in
    [0, 10]"`` (``"... >= 0"``, ``"... > 0"`` for one bound) or ``message``.
    """

    def __init__(self, type, left, right, *, closed="both", finite=False, bool_ok=False,
                 message=None):
        if type not in (int, numbers.Real):
            raise TypeError(f"Interval type must be int or numbers.Real, got {type!r}")
        if closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"closed={closed!r}")
        if type is int and (closed != "both" or finite or bool_ok):
            raise ValueError("an int Interval is closed, finite and refuses bool")
        self.type, self.left, self.right, self.closed = type, left, right, closed
        self.finite, self.bool_ok, self.message = finite, bool_ok, message

    def _in_range(self, v) -> bool:
        lo_open = self.closed in ("right", "neither")
        hi_open = self.closed in ("left", "neither")
        return ((self.left is None or (self.left < v if lo_open else self.left <= v))
                and (self.right is None or (v < self.right if hi_open else v <= self.right)))

    def _wording(self) -> str:  # Real only
        if self.message is not None:
            return self.message
        if self.right is None:
            return f"must be a float {'>' if self.closed in ('right', 'neither') else '>='} " \
                   f"{self.left}"
        if self.left is None:
            return f"must be a float {'<' if self.closed in ('left', 'neither') else '<='} " \
                   f"{self.right}"
        lo = "(" if self.closed in ("right", "neither") else "["
        hi = ")" if self.closed in ("left", "neither") else "]"
        return f"must be a float in {lo}{self.left}, {self.right}{hi}"

    def check(self, value, name, error=ParameterError):
        if self.type is int:
            check_int(value, name, low=self.left, high=self.right, error=error,
                      message=self.message)
        elif not ((self.bool_ok or not isinstance(value, bool))
                  and isinstance(value, numbers.Real)
                  and (not self.finite or np.isfinite(value))
                  and self._in_range(value)):
            raise error(f"{name}={value!r} {self._wording()}", field=name)

    def __repr__(self):
        t = "int" if self.type is int else "Real"
        return f"Interval({t}, {self.left!r}, {self.right!r}, closed={self.closed!r})"


class Options:
    """One of ``values`` (a tuple, compared with ``in``), refused as ``"{name}={value!r}
    must be one of {values}"``."""

    def __init__(self, values):
        self.values = tuple(values)

    def check(self, value, name, error=ParameterError):
        if value not in self.values:
            raise error(f"{name}={value!r} must be one of {self.values}", field=name)

    def __repr__(self):
        return f"Options({self.values!r})"


class Boolean:
    """``True`` or ``False`` (Python or numpy bool), refused as ``"{name}={value!r} must be
    true or false"``."""

    def check(self, value, name, error=ParameterError):
        if not isinstance(value, (bool, np.bool_)):
            raise error(f"{name}={value!r} must be true or false", field=name)

    def __repr__(self):
        return "Boolean()"


class Device:
    """A torch device this machine has (:func:`check_device`'s rule and wording)."""

    def check(self, value, name, error=ParameterError):
        check_device(value, name, error=error)

    def __repr__(self):
        return "Device()"


#: the ``fit_rows`` hyper-parameter of the K-means based estimators
#: (:func:`as3l_plugin.clustering.fit_size`): ``'auto'``, ``None`` (every row) or an int
FIT_ROWS = [None, Options(("auto",)), Interval(int, 1, None)]


def check_params(obj, constraints: dict, *, error=ParameterError) -> None:
    """Check the attributes of ``obj`` named by ``constraints``, in the dict's order.

    ``constraints`` maps a name to a list of accepted kinds: ``None`` (the value ``None``)
    and constraints (:class:`Interval`, :class:`Options`, :class:`Boolean`, anything with
    ``check(value, name, error)``). A value is accepted when one kind accepts it; otherwise
    the first constraint's error is raised. Names not in ``constraints`` are not checked.
    """
    for name, accepted in constraints.items():
        value = getattr(obj, name)
        if value is None and any(c is None for c in accepted):
            continue
        first = None
        for rule in (c for c in accepted if c is not None):
            try:
                rule.check(value, name, error)
                break
            except error as exc:
                first = first or exc
        else:
            if first is not None:
                raise first
