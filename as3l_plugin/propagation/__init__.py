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

from ..registry import Registry
from .base import BasePropagator, PropagationWarning

_PROPAGATORS = Registry("propagator", BasePropagator)

#: ``register_propagator(name, cls=None)``: register a :class:`BasePropagator` subclass under
#: ``name`` (also as a decorator); ``list_propagators()``: the names, sorted;
#: ``get_propagator(name, **params)``: an instance, hyper-parameters checked
#: (:class:`as3l_plugin.registry.Registry`, its errors)
register_propagator = _PROPAGATORS.register
list_propagators = _PROPAGATORS.names
get_propagator = _PROPAGATORS.build


from .seeded_kmeans import SeededKMeansPropagator  # noqa: E402
from .label_spreading import LabelSpreadingPropagator  # noqa: E402
from .knn import KNNPropagator  # noqa: E402

register_propagator("seeded_kmeans", SeededKMeansPropagator)
register_propagator("label_spreading", LabelSpreadingPropagator)
register_propagator("knn", KNNPropagator)

__all__ = ["BasePropagator", "PropagationWarning", "get_propagator", "list_propagators",
           "register_propagator", "SeededKMeansPropagator", "LabelSpreadingPropagator",
           "KNNPropagator"]
