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

from ..registry import Registry
from .base import BaseSampler

_SAMPLERS = Registry("sampler", BaseSampler)

#: ``register_sampler(name, cls=None)``: register a :class:`BaseSampler` subclass under
#: ``name`` (also as a decorator); ``list_samplers()``: the names, sorted;
#: ``get_sampler(name, **params)``: an instance, hyper-parameters checked
#: (:class:`as3l_plugin.registry.Registry`, its errors)
register_sampler = _SAMPLERS.register
list_samplers = _SAMPLERS.names
get_sampler = _SAMPLERS.build


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
