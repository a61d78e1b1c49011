"""Self-supervised objectives the pretrainer can optimise, behind one interface.

Every objective is an ``nn.Module`` holding the backbone and its heads, with

- ``backbone``: the USB backbone being trained (``backbone(x, only_feat=True)`` →
  ``(B, num_features)``);
- ``forward(x1, x2) -> (loss, z1)``: the two augmented views ``(B, C, H, W)`` of one batch
  give a scalar loss and the first view's projection ``(B, dim)`` (for the collapse monitor);
- ``param_groups() -> list of dict``: optimiser groups, each with a ``fix_lr`` flag (kept at
  the base learning rate by the cosine schedule).

Objectives (:data:`OBJECTIVES`):

``simsiam``
    Chen & He 2021: projector + predictor, negative cosine with stop-gradient
    (:mod:`as3l_plugin.features.simsiam`); the predictor's learning rate is fixed.
``simclr``
    Chen et al. 2020: a 2-layer projection head (``Linear-BN-ReLU-Linear``, output 128) and
    the NT-Xent loss over the ``2B`` views of a batch at ``temperature``. Head and loss come
    from ``lightly`` (installed with ``--no-deps``: only its ``loss`` and ``models.modules``
    are used).
``vicreg``
    Bardes et al. 2022: a 3-layer expander and the variance-invariance-covariance loss
    (lightly's, with its default weights 25/25/1).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from ..errors import ParameterError
from .simsiam import NegativeCosineLoss, SimSiam


def _lightly(what: str):
    try:
        import lightly.loss as loss
        import lightly.models.modules.heads as modules
    except ImportError as exc:  # pragma: no cover - lightly is installed by .ci/setup
        raise ParameterError(f"objective {what!r} needs the 'lightly' package "
                             "(pip install --no-deps lightly==1.6.0)", field="objective") from exc
    return loss, modules


class SimSiamObjective(SimSiam):
    """SimSiam; ``fix_pred_lr`` keeps the predictor at the base learning rate. A
    :class:`~as3l_plugin.features.simsiam.SimSiam` (same state-dict keys), whose ``forward``
    returns ``(loss, z1)``."""

    def __init__(self, backbone: nn.Module, *, fix_pred_lr: bool = True):
        super().__init__(backbone)
        self.criterion = NegativeCosineLoss()
        self.fix_pred_lr = fix_pred_lr

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        p1, p2, z1, z2 = super().forward(x1, x2)
        return self.criterion(p1.float(), p2.float(), z1.float(), z2.float()), z1

    def param_groups(self) -> List[Dict]:
        return [{"params": list(self.backbone.parameters()) + list(self.projector.parameters()),
                 "fix_lr": False},
                {"params": list(self.predictor.parameters()), "fix_lr": bool(self.fix_pred_lr)}]


class SimCLRObjective(nn.Module):
    """SimCLR with NT-Xent at ``temperature``; projection head of width ``hidden_dim`` → ``dim``."""

    def __init__(self, backbone: nn.Module, *, temperature: float = 0.5, dim: int = 128,
                 hidden_dim: int | None = None):
        super().__init__()
        loss, modules = _lightly("simclr")
        f = int(backbone.num_features)
        self.backbone = backbone
        self.head = modules.SimCLRProjectionHead(f, hidden_dim or 4 * f, dim)
        self.criterion = loss.NTXentLoss(temperature=temperature)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        z = self.head(self.backbone(torch.cat([x1, x2]), only_feat=True)).float()
        z1, z2 = z.chunk(2)
        return self.criterion(z1, z2), z1

    def param_groups(self) -> List[Dict]:
        return [{"params": list(self.parameters()), "fix_lr": False}]


class VICRegObjective(nn.Module):
    """VICReg with a 3-layer expander of width ``dim``."""

    def __init__(self, backbone: nn.Module, *, dim: int | None = None):
        super().__init__()
        loss, modules = _lightly("vicreg")
        f = int(backbone.num_features)
        d = dim or 4 * f
        self.backbone = backbone
        self.head = modules.VICRegProjectionHead(input_dim=f, hidden_dim=d, output_dim=d,
                                                 num_layers=3)
        self.criterion = loss.VICRegLoss()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # each view its own BatchNorm batch, as in the reference implementation
        z1 = self.head(self.backbone(x1, only_feat=True)).float()
        z2 = self.head(self.backbone(x2, only_feat=True)).float()
        return self.criterion(z1, z2), z1

    def param_groups(self) -> List[Dict]:
        return [{"params": list(self.parameters()), "fix_lr": False}]


#: name -> (class, keyword arguments the pretrainer forwards from its own parameters)
OBJECTIVES = {"simsiam": (SimSiamObjective, ("fix_pred_lr",)),
              "simclr": (SimCLRObjective, ("temperature",)),
              "vicreg": (VICRegObjective, ())}


def check_objective(name) -> str:
    """``name`` if it is a key of :data:`OBJECTIVES`, else :class:`ParameterError`."""
    if name not in OBJECTIVES:
        raise ParameterError(f"objective={name!r} is not one of {', '.join(OBJECTIVES)}",
                             field="objective")
    return name


def build_objective(name: str, backbone: nn.Module, **params) -> nn.Module:
    """The objective ``name`` around ``backbone``; ``params`` not used by it are ignored."""
    cls, keys = OBJECTIVES[check_objective(name)]
    return cls(backbone, **{k: params[k] for k in keys if k in params})
