"""USB (semilearn 0.3.2) integration of AS3L.

Importing this package

- applies the runtime shims of :mod:`as3l_plugin.usb.compat` (``net: cnn4``,
  ``dataset: digits | fashion_mnist``, ``lb_index_file`` for every algorithm);
- registers ``as3l_flexmatch`` in ``semilearn.core.utils.ALGORITHMS``.

Import it before semilearn parses a config or builds an algorithm. Then either use the
plugin's entry (CPU-capable, writes ``metrics.csv``)::

    from as3l_plugin.usb.train import train
    result = train("usb_configs/digits/as3l_flexmatch.yaml", num_train_iter=200)
    # {'best_acc': ..., 'best_it': ..., 'final_acc': ..., 'save_dir': ...}

or ``as3l train --c CONFIG.yaml``.
"""

from . import compat as _compat

_compat.quiet_semilearn_warnings()
_compat.apply()

from .algorithm import AS3LFlexMatch  # noqa: E402  (registers 'as3l_flexmatch')
from . import train  # noqa: E402,F401  (the module; its train() is as3l_plugin.usb.train.train)

__all__ = ["AS3LFlexMatch", "compat", "train"]
compat = _compat
