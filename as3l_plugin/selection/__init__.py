"""Labeled-set selection: which samples to annotate (Sec. 3.2.2 and peers).

Usage::

    from as3l_plugin.selection import get_sampler
    idx = get_sampler("as3l").select(features, budget=10, seed=0)   # int64 (10,)

Samplers (see each module's docstring):

- ``as3l`` — the paper's multi-clustering selection: C K-means runs with K = budget,
  samples grouped together in all runs form consistent groups, one medoid per large group;
- ``random`` — uniform random;
- ``kmedoids`` — K-means with K = budget, the sample closest to each centre (the paper's
  "K-medoids" baseline);
- ``coreset`` — k-center greedy (Sener & Savarese 2018);
- ``typiclust`` — TypiClust (Hacohen et al. 2022): most typical sample of the largest
  uncovered K-means cluster;
- ``probcover`` — ProbCover (Yehuda et al. 2022): greedy max coverage of δ-balls.
"""

from __future__ import annotations

from ..errors import ParameterError
from .base import BaseSampler

_REGISTRY: dict[str, type] = {}


def register_sampler(name: str, cls: type | None = None):
    """Register a :class:`BaseSampler` subclass under ``name`` (also as a decorator).

    Raises
    ------
    ParameterError
        ``name`` is already registered, or ``cls`` is not a BaseSampler subclass.
    """
    def _add(c):
        if name in _REGISTRY:
            raise ParameterError(f"sampler {name!r} is already registered "
                                 f"({_REGISTRY[name].__module__}.{_REGISTRY[name].__name__})",
                                 field="name")
        if not (isinstance(c, type) and issubclass(c, BaseSampler)):
            raise ParameterError(f"{c!r} is not a BaseSampler subclass", field="cls")
        c.name = name
        _REGISTRY[name] = c
        return c
    return _add if cls is None else _add(cls)


def list_samplers() -> list[str]:
    """Names accepted by :func:`get_sampler`, sorted."""
    return sorted(_REGISTRY)


def get_sampler(name: str, **params) -> BaseSampler:
    """Build the sampler ``name`` with hyper-parameters ``params``.

    Raises
    ------
    ParameterError
        Unknown name (the message lists the known ones), unknown or invalid parameter.
    """
    if name not in _REGISTRY:
        raise ParameterError(f"unknown sampler {name!r}; known: {', '.join(list_samplers())}",
                             field="sampler")
    cls = _REGISTRY[name]
    allowed = cls._param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(f"{name} has no parameter(s) {', '.join(unknown)}; accepted: "
                             f"{', '.join(allowed) or '(none)'}", field="param")
    obj = cls(**params)
    obj._check_params()
    return obj


from .as3l import AS3LSampler  # noqa: E402
from .random import RandomSampler  # noqa: E402
from .kmedoids import KMedoidsSampler  # noqa: E402
from .coreset import CoresetSampler  # noqa: E402
from .typiclust import TypiClustSampler  # noqa: E402
from .probcover import ProbCoverSampler  # noqa: E402

register_sampler("as3l", AS3LSampler)
register_sampler("random", RandomSampler)
register_sampler("kmedoids", KMedoidsSampler)
register_sampler("coreset", CoresetSampler)
register_sampler("typiclust", TypiClustSampler)
register_sampler("probcover", ProbCoverSampler)

__all__ = ["BaseSampler", "get_sampler", "list_samplers", "register_sampler", "AS3LSampler",
           "RandomSampler", "KMedoidsSampler", "CoresetSampler", "TypiClustSampler",
           "ProbCoverSampler"]
