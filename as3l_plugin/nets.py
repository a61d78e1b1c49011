"""A small CNN for the embedded grayscale datasets (digits 8x8, Fashion-MNIST 28x28).

It follows the interface of USB's backbones (``semilearn.nets.wrn``) so every USB algorithm
and the feature stage can use it unchanged:

- builder ``cnn4(num_classes=10, pretrained=False, pretrained_path=None, **kwargs)``;
- ``forward(x, only_fc=False, only_feat=False)`` → ``{'logits': (B, C), 'feat': (B, F)}``,
  ``only_feat`` → pooled features ``(B, F)``, ``only_fc`` → ``classifier(x)``;
- ``num_features`` (= F = 128), ``extract(x)`` (the conv map), ``no_weight_decay()``.

The classifier is the module named ``classifier``, so USB's checkpoint loader (which drops
``classifier.*`` keys) initialises only the encoder from a SimSiam checkpoint.
:mod:`as3l_plugin.usb.compat` registers the builders in ``semilearn.nets``; this module
itself imports only torch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Four 3x3 conv-BN-ReLU blocks (32, 64, 128, 128 channels), two 2x2 max-pools, global
    average pooling, and a linear classifier.

    Parameters
    ----------
    num_classes : int
        Output width of ``classifier``.
    in_channels : int, default 1
        1 for grayscale, 3 for RGB.
    width : int, default 32
        Channels of the first block; later blocks use 2x and 4x.

    Input ``x``: float32 ``(B, in_channels, H, W)`` with H, W >= 4. Output: see module doc.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, **kwargs):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w), _conv_bn(w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), nn.MaxPool2d(2), _conv_bn(4 * w, 4 * w))
        self.num_features = 4 * w
        self.channels = self.num_features
        self.classifier = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x, only_fc: bool = False, only_feat: bool = False, **kwargs):
        if only_fc:
            return self.classifier(x)
        feat = torch.flatten(F.adaptive_avg_pool2d(self.extract(x), 1), 1)
        if only_feat:
            return feat
        return {"logits": self.classifier(feat), "feat": feat}

    def no_weight_decay(self):
        return [n for n, _ in self.named_parameters() if "bias" in n or ".1." in n]

    def group_matcher(self, coarse: bool = False, prefix: str = ""):
        return dict(stem=rf"^{prefix}features\.0", blocks=rf"^{prefix}features\.(\d+)")


def _load_encoder(model: nn.Module, path) -> nn.Module:
    """Load encoder weights from a checkpoint file (never a URL). Classifier keys are skipped."""
    import os
    if not path or not os.path.isfile(path):
        from .errors import InputError
        raise InputError("pretrained checkpoint not found (set pretrain_path to a file made by "
                         "`as3l pretrain`)", path=path, field="pretrain_path")
    state = torch.load(path, map_location="cpu")
    state = state.get("model", state)
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith("classifier")}
    model.load_state_dict(state, strict=False)
    return model


def cnn4(num_classes: int = 10, pretrained: bool = False, pretrained_path=None, **kwargs) -> SmallCNN:
    """Grayscale SmallCNN (1 input channel)."""
    model = SmallCNN(num_classes=num_classes, in_channels=1, **kwargs)
    return _load_encoder(model, pretrained_path) if pretrained else model


def cnn4_rgb(num_classes: int = 10, pretrained: bool = False, pretrained_path=None, **kwargs) -> SmallCNN:
    """RGB SmallCNN (3 input channels)."""
    model = SmallCNN(num_classes=num_classes, in_channels=3, **kwargs)
    return _load_encoder(model, pretrained_path) if pretrained else model


def cnn4_wide(num_classes: int = 10, pretrained: bool = False, pretrained_path=None,
              **kwargs) -> SmallCNN:
    """Grayscale SmallCNN at 1.5x width (48, 96, 192, 192 channels; about 2.2x the FLOPs)."""
    kwargs.setdefault("width", 48)
    return cnn4(num_classes, pretrained, pretrained_path, **kwargs)


NETS = {"cnn4": cnn4, "cnn4_rgb": cnn4_rgb, "cnn4_wide": cnn4_wide}
