"""What samplers and propagators share: hyper-parameters as keyword-only ``__init__``
arguments (:class:`Configurable`) and a name → class registry (:class:`Registry`).

:mod:`as3l_plugin.selection` and :mod:`as3l_plugin.propagation` each hold one
:class:`Registry`; their ``register_*`` / ``list_*`` / ``get_*`` functions call it.
"""

from __future__ import annotations

import inspect

from .errors import ParameterError

__all__ = ["Configurable", "Registry"]


class Configurable:
    """Hyper-parameters taken as keyword-only ``__init__`` arguments and stored unchanged;
    validated by :meth:`_check_params` (override)."""

    #: registry name, set by :meth:`Registry.register`
    name: str = ""

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
        """Raise :class:`ParameterError` for an invalid hyper-parameter (override)."""

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
        """Register ``cls`` under ``name`` (also as a decorator); sets ``cls.name``."""
        def _add(c):
            if name in self.classes:
                old = self.classes[name]
                raise ParameterError(f"{self.kind} {name!r} is already registered "
                                     f"({old.__module__}.{old.__name__})", field="name")
            if not (isinstance(c, type) and issubclass(c, self.base)):
                raise ParameterError(f"{c!r} is not a {self.base.__name__} subclass",
                                     field="cls")
            c.name = name
            self.classes[name] = c
            return c
        return _add if cls is None else _add(cls)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self.classes)

    def build(self, name: str, **params):
        """An instance of the class ``name`` with ``params``, checked."""
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
