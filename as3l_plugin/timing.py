"""The one CPU clock for the plugin's cost accounting.

The stage runner (:mod:`as3l_plugin.stages`) and the training metrics hook
(:class:`as3l_plugin.usb.hooks.MetricsCSVHook`) both read :func:`cpu_seconds`, so a stage's
``cpu_s`` and a training's ``cpu_time_s`` column count the same thing.
"""

from __future__ import annotations

import resource


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system), in seconds.

    With one thread per process this approximates the wall time on an otherwise idle
    machine, which makes timings taken under load from other jobs interpretable.
    """
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
