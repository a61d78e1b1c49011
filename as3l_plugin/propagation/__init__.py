"""Label propagation: turn a few labeled samples into a prior over every sample (Sec. 3.3).

Usage::

    from as3l_plugin.propagation import get_propagator
    prior = get_propagator("seeded_kmeans").propagate(features, labeled_idx, labels,
                                                      num_classes=10, seed=0)
    # prior: float32 (n, 10), rows sum to 1, labeled rows one-hot

Propagators (see each module's docstring):

- ``seeded_kmeans`` — the paper's: constrained seeded K-means at K = 10…60, labels of a
  cluster's labeled members spread to the cluster, averaged over K.
- ``label_spreading`` — LLGC (Zhou et al. 2004) on a kNN graph, via scikit-learn.
- ``knn`` — label distribution of the k nearest labeled samples.
"""

from __future__ import annotations

from ..errors import ParameterError
from .base import BasePropagator, PropagationWarning

_REGISTRY: dict[str, type] = {}


def register_propagator(name: str, cls: type | None = None):
    """Register a :class:`BasePropagator` subclass under ``name`` (also as a decorator).

    Raises
    ------
    ParameterError
        ``name`` is already registered.
    """
    def _add(c):
        if name in _REGISTRY:
            raise ParameterError(f"propagator {name!r} is already registered "
                                 f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__name__})",
                                 field="name")
        if not (isinstance(c, type) and issubclass(c, BasePropagator)):
            raise ParameterError(f"{c!r} is not a BasePropagator subclass", field="cls")
        c.name = name
        _REGISTRY[name] = c
        return c
    return _add if cls is None else _add(cls)


def list_propagators() -> list[str]:
    """Names accepted by :func:`get_propagator`, sorted."""
    return sorted(_REGISTRY)


def get_propagator(name: str, **params) -> BasePropagator:
    """Build the propagator ``name`` with hyper-parameters ``params``.

    Raises
    ------
    ParameterError
        Unknown name (the message lists the known ones), unknown or invalid parameter.
    """
    if name not in _REGISTRY:
        raise ParameterError(f"unknown propagator {name!r}; known: "
                             f"{', '.join(list_propagators())}", field="propagator")
    cls = _REGISTRY[name]
    allowed = cls._param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(f"{name} has no parameter(s) {', '.join(unknown)}; accepted: "
                             f"{', '.join(allowed) or '(none)'}", field="param")
    obj = cls(**params)
    obj._check_params()
    return obj


from .seeded_kmeans import SeededKMeansPropagator  # noqa: E402
from .label_spreading import LabelSpreadingPropagator  # noqa: E402
from .knn import KNNPropagator  # noqa: E402

register_propagator("seeded_kmeans", SeededKMeansPropagator)
register_propagator("label_spreading", LabelSpreadingPropagator)
register_propagator("knn", KNNPropagator)

__all__ = ["BasePropagator", "PropagationWarning", "get_propagator", "list_propagators",
           "register_propagator", "SeededKMeansPropagator", "LabelSpreadingPropagator",
           "KNNPropagator"]
