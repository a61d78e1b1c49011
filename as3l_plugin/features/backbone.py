"""Backbones for the feature stage, and the ``backbone.pth`` file that hands them to USB.

The backbone is the network the SSL stage trains. Names resolve to

- :data:`as3l_plugin.nets.NETS` (``cnn4``, ``cnn4_rgb``): imported directly;
- anything else to a builder in ``semilearn.nets`` (``wrn_28_2``, ``wrn_28_8``,
  ``wrn_var_37_2``, ``resnet50``, ...), imported only then (it takes seconds).

``backbone.pth`` format (``torch.save`` of a dict; read by USB's
``semilearn.nets.utils.load_checkpoint`` and by :func:`as3l_plugin.nets.cnn4`, both of
which use ``checkpoint['model']`` and skip ``classifier.*``)::

    {'model': backbone.state_dict() without classifier.*,
     'net': 'cnn4', 'dataset': 'fashion_mnist', 'format': BACKBONE_FORMAT,
     'num_features': 128, 'in_channels': 1, 'image_size': 28,
     'mean': (...), 'std': (...),   # input normalisation used in pretraining
     'epochs': 100, 'loss': -0.93, 'seed': 0}

USB config: ``use_pretrain: True`` and ``pretrain_path: <DIR>/backbone.pth``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn as nn

from ..errors import InputError, ParameterError

BACKBONE_FORMAT = "as3l-simsiam-backbone/1"
#: vision builders in semilearn.nets 0.3.2 (listed so errors can name them without importing)
SEMILEARN_NETS = ("wrn_28_2", "wrn_28_8", "wrn_var_37_2", "resnet50", "vit_tiny_patch2_32",
                  "vit_small_patch2_32", "vit_small_patch16_224", "vit_base_patch16_96",
                  "vit_base_patch16_224")


def known_nets() -> list:
    from ..nets import NETS
    return sorted(NETS) + list(SEMILEARN_NETS)


def build_backbone(net: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised backbone ``net`` with USB's interface.

    Raises
    ------
    ParameterError
        Unknown name (the message lists the known ones).
    """
    from ..nets import NETS
    if net in NETS:
        return NETS[net](num_classes=num_classes)
    if net not in SEMILEARN_NETS:
        raise ParameterError(f"unknown net {net!r}; known: {', '.join(known_nets())}",
                             field="net")
    import semilearn.nets as snets  # slow import: only for USB's own nets
    return getattr(snets, net)(num_classes=num_classes)


def input_channels(backbone: nn.Module) -> int:
    """Channels the backbone's first convolution expects (3 when it has none)."""
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def encoder_state(backbone: nn.Module) -> Dict[str, torch.Tensor]:
    """``state_dict`` without the classifier, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()
            if not k.startswith("classifier.")}


def torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_torch_file(path, *, what: str) -> Dict[str, Any]:
    """``torch.load`` with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "backbone.pth"
    if not path.is_file():
        raise InputError(f"{what} not found (make it with `as3l pretrain`)", path=path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle/zip errors come in many types
        raise InputError(f"cannot read {what}: not a torch checkpoint or truncated ({exc})",
                         path=path) from exc
    if not isinstance(obj, dict) or "model" not in obj:
        raise InputError(f"not a {what}: expected a dict with a 'model' state_dict",
                         path=path)
    return obj


def load_backbone(path, *, net: str | None = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the backbone stored in ``backbone.pth`` (or a directory holding one).

    Parameters
    ----------
    path : str or Path
        A file written by :func:`as3l_plugin.features.pretrain_simsiam`, or its directory.
    net : str, optional
        Expected net; a checkpoint of another net is an error.

    Returns
    -------
    backbone : nn.Module
        In eval mode, on the CPU.
    meta : dict
        The checkpoint's other entries (``net``, ``dataset``, ``mean``, ``std``, ...).

    Raises
    ------
    InputError
        Missing/unreadable file, another net than ``net``, or weights that do not fit the net.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "backbone.pth"
    ckpt = load_torch_file(path, what="backbone checkpoint")
    stored = ckpt.get("net")
    if stored is None:
        raise InputError("checkpoint has no 'net' entry; it was not written by `as3l pretrain`",
                         path=path)
    if net is not None and net != stored:
        raise InputError(f"checkpoint is of net {stored!r}, expected {net!r}", path=path,
                         field="net")
    backbone = build_backbone(stored)
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    want = set(encoder_state(backbone))
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        raise InputError(f"weights do not fit net {stored!r}: {len(missing)} missing keys "
                         f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}",
                         path=path)
    try:
        backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit net {stored!r} ({str(exc).splitlines()[-1]})",
                         path=path) from exc
    meta = {k: v for k, v in ckpt.items() if k != "model"}
    meta["path"] = str(path)
    return backbone.eval(), meta
