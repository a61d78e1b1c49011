"""SimSiam (Chen & He, *Exploring Simple Siamese Representation Learning*, CVPR 2021).

Three small modules and one wrapper:

- :class:`ProjectionHead` (the paper's ``g``): ``Linear-BN-ReLU`` blocks and an output
  ``Linear-BN`` without ReLU. The paper uses 3 layers of width 2048 on ImageNet and 2 layers
  on CIFAR; we default to 2 (our images are CIFAR-sized or smaller).
- :class:`PredictionHead` (``h``): a bottleneck ``Linear-BN-ReLU-Linear`` whose hidden width
  is a quarter of its input/output width (2048 → 512 → 2048 in the paper).
- :class:`NegativeCosineLoss`: ``D(p, z) = -cos(p, stopgrad(z))`` averaged over the batch,
  symmetrised over the two views. **The stop-gradient lives here and only here**: whatever
  the caller passes as ``z`` is detached, so no gradient can flow into the target branch.
- :class:`SimSiam`: a backbone (any USB backbone: ``backbone(x, only_feat=True)`` returns the
  pooled features of width ``backbone.num_features``) plus the two heads.

Head widths are scaled to the backbone (:func:`head_dims`): ``dim = min(2048,
4 * num_features)`` and ``pred_dim = dim // 4``. A WRN-28-8 (512 features) gets the paper's
2048/512; WRN-28-2 and the small CNN (128 features) get 512/128, which trains the same way
at a fraction of the cost on a CPU.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def head_dims(num_features: int) -> Tuple[int, int]:
    """Projector output width and predictor hidden width for a backbone of this width."""
    if num_features < 1:
        raise ValueError(f"num_features={num_features} should be >= 1")
    dim = int(min(2048, 4 * num_features))
    return dim, max(dim // 4, 1)


class ProjectionHead(nn.Sequential):
    """SimSiam projector ``g``: "BN applied to each fully-connected layer, including its
    output fc; its output fc has no ReLU" (SimSiam Sec. 4).

    Parameters
    ----------
    in_dim : int
        Backbone feature width ``F``.
    dim : int, default 2048
        Hidden and output width.
    num_layers : int, default 2
        2 (CIFAR recipe) or 3 (ImageNet recipe).

    Input ``(B, in_dim)`` float32 → output ``(B, dim)``.
    """

    def __init__(self, in_dim: int, dim: int = 2048, num_layers: int = 2):
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} should be >= 1")
        layers = []
        width = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)]
            width = dim
        # the output BN has no affine part, as in the reference implementation
        layers += [nn.Linear(width, dim, bias=False), nn.BatchNorm1d(dim, affine=False)]
        super().__init__(*layers)


class PredictionHead(nn.Sequential):
    """SimSiam predictor ``h``: "BN applied to its hidden fc layers; its output fc does not
    have BN or ReLU. This MLP has 2 layers" with a bottleneck (SimSiam Sec. 4).

    Input ``(B, dim)`` → output ``(B, dim)``.
    """

    def __init__(self, dim: int = 2048, hidden_dim: int = 512):
        super().__init__(nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, dim))


class NegativeCosineLoss(nn.Module):
    """Symmetric negative cosine similarity with stop-gradient on the targets.

    ``forward(p1, p2, z1, z2) = (D(p1, z2) + D(p2, z1)) / 2`` with
    ``D(p, z) = -mean_b cos(p_b, stopgrad(z_b))``; the value lies in ``[-1, 1]`` and is
    ``-1`` when the predictions match the other view's projections perfectly.

    Parameters
    ----------
    eps : float, default 1e-8
        Guards the norms, as in :class:`torch.nn.CosineSimilarity`.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def negative_cosine(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``D(p, z)`` for one pair; ``z`` is detached here (the only stop-gradient)."""
        return -F.cosine_similarity(p, z.detach(), dim=1, eps=self.eps).mean()

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor,
                z2: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.negative_cosine(p1, z2) + self.negative_cosine(p2, z1))


class SimSiam(nn.Module):
    """Backbone + projector + predictor.

    Parameters
    ----------
    backbone : nn.Module
        A USB backbone: ``backbone(x, only_feat=True)`` → ``(B, num_features)``.
    dim, pred_dim : int, optional
        Head widths; default :func:`head_dims` of ``backbone.num_features``.
    proj_layers : int, default 2

    ``forward(x1, x2)`` takes the two views ``(B, C, H, W)`` and returns ``(p1, p2, z1, z2)``,
    each ``(B, dim)``; pass them to :class:`NegativeCosineLoss`.
    """

    def __init__(self, backbone: nn.Module, dim: int | None = None, pred_dim: int | None = None,
                 proj_layers: int = 2):
        super().__init__()
        num_features = int(backbone.num_features)
        d_dim, d_pred = head_dims(num_features)
        self.backbone = backbone
        self.projector = ProjectionHead(num_features, dim or d_dim, proj_layers)
        self.predictor = PredictionHead(dim or d_dim, pred_dim or d_pred)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, num_features)``."""
        return self.backbone(x, only_feat=True)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        # each view is its own batch, so BatchNorm normalises it with its own statistics,
        # as in the reference implementation
        z1 = self.projector(self.encode(x1))
        z2 = self.projector(self.encode(x2))
        return self.predictor(z1), self.predictor(z2), z1, z2
