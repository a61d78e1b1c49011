"""CPU bfloat16 autocast: the one switch the torch stages use on CPUs.

USB's ``amp`` flag keeps its GPU meaning (``torch.cuda.amp`` with a gradient scaler); on a
CPU the plugin instead runs forward passes under ``torch.autocast('cpu', dtype=bfloat16)``
(no scaler: bfloat16 has float32's exponent range). Weights, optimiser state and the
losses stay float32.

``cpu_bf16`` settings accepted everywhere (pretraining, feature extraction, USB training):

- ``'auto'`` (default): on when the device is a CPU whose oneDNN has native bfloat16
  kernels (AVX-512 BF16 / AMX); off elsewhere, where emulated bfloat16 is slower;
- ``True`` / ``False``: force it on or off (``True`` on a CPU without native support is
  allowed but slow).
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Union

import torch

from .errors import ParameterError

CpuBf16 = Union[bool, str]


@lru_cache(maxsize=1)
def cpu_bf16_supported() -> bool:
    """True when this CPU runs oneDNN bfloat16 convolutions and matmuls natively."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def check_cpu_bf16(value, field: str = "cpu_bf16") -> CpuBf16:
    """``value`` if it is ``True``, ``False`` or ``'auto'`` (also the strings 'true'/'false')."""
    if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
        return {"true": True, "false": False, "auto": "auto"}[value.lower()]
    if isinstance(value, bool):
        return value
    raise ParameterError(f"{field}={value!r} must be true, false or 'auto'", field=field)


def use_cpu_bf16(setting: CpuBf16, device) -> bool:
    """Whether ``setting`` turns bfloat16 autocast on for ``device``."""
    setting = check_cpu_bf16(setting)
    if torch.device(device).type != "cpu":
        return False
    return cpu_bf16_supported() if setting == "auto" else bool(setting)


def autocast_factory(enabled: bool):
    """A zero-argument callable returning the context to run forward passes in."""
    if not enabled:
        return contextlib.nullcontext
    return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
