"""What samplers and propagators share: hyper-parameters as keyword-only ``__init__``
arguments (:class:`Configurable`) and a name → class registry (:class:`Registry`).

:mod:`as3l_plugin.selection` and :mod:`as3l_plugin.propagation` each hold one
:class:`Registry`; their ``register_*`` / ``list_*`` / ``get_*`` functions call it.
"""

from __future__ import annotations

import inspect

from .errors import ParameterError
from .validate import check_params

__all__ = ["Configurable", "Registry"]


class Configurable:
    """Hyper-parameters taken as keyword-only ``__init__`` arguments and stored unchanged,
    declared in ``_parameter_constraints`` and checked by :meth:`_check_params`.

    ``_parameter_constraints`` maps a parameter name to its accepted kinds (``None``,
    :class:`~as3l_plugin.validate.Interval`, :class:`~as3l_plugin.validate.Options`,
    :class:`~as3l_plugin.validate.Boolean`), checked in the dict's order by
    :func:`as3l_plugin.validate.check_params`; a parameter left out is not checked here (the
    engine it is handed to checks it). A rule the spec cannot express goes in an override of
    :meth:`_check_params` that also calls ``super()._check_params()``.
    """

    #: registry name, set by :meth:`Registry.register`
    name: str = ""
    #: parameter name -> accepted kinds (see the class docstring)
    _parameter_constraints: dict = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.kind == p.KEYWORD_ONLY]

    def get_params(self) -> dict:
        """The hyper-parameters, as passed to ``__init__`` (JSON-friendly)."""
        out = {}
        for k in self._param_names():
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def _check_params(self) -> None:
        """Raise :class:`ParameterError` for an invalid hyper-parameter (the first, in
        ``_parameter_constraints`` order)."""
        check_params(self, self._parameter_constraints)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class Registry:
    """Subclasses of ``base`` by name; ``kind`` (``"sampler"``, ``"propagator"``) words the
    errors and is their field for an unknown name."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self.classes: dict[str, type] = {}

    def register(self, name: str, cls: type | None = None):
        """Register ``cls`` under ``name`` (also as a decorator); sets ``cls.name``.

        Raises
        ------
        ParameterError
            ``name`` is already registered, ``cls`` is not a subclass of the base, or its
            ``_parameter_constraints`` name a parameter ``__init__`` does not take.
        """
        def _add(c):
            if name in self.classes:
                old = self.classes[name]
                raise ParameterError(f"{self.kind} {name!r} is already registered "
                                     f"({old.__module__}.{old.__name__})", field="name")
            if not (isinstance(c, type) and issubclass(c, self.base)):
                raise ParameterError(f"{c!r} is not a {self.base.__name__} subclass",
                                     field="cls")
            stray = sorted(set(c._parameter_constraints) - set(c._param_names()))
            if stray:
                raise ParameterError(f"{c.__name__}._parameter_constraints names "
                                     f"{', '.join(stray)}, not keyword-only arguments of "
                                     "__init__", field="cls")
            c.name = name
            self.classes[name] = c
            return c
        return _add if cls is None else _add(cls)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self.classes)

    def build(self, name: str, **params):
        """An instance of the class ``name`` with hyper-parameters ``params``, checked.

        Raises
        ------
        ParameterError
            Unknown name (the message lists the known ones), unknown or invalid parameter.
        """
        if name not in self.classes:
            raise ParameterError(f"unknown {self.kind} {name!r}; known: "
                                 f"{', '.join(self.names())}", field=self.kind)
        cls = self.classes[name]
        allowed = cls._param_names()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ParameterError(f"{name} has no parameter(s) {', '.join(unknown)}; accepted: "
                                 f"{', '.join(allowed) or '(none)'}", field="param")
        obj = cls(**params)
        obj._check_params()
        return obj
