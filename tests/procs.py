"""Subprocess helpers shared by the SIGKILL tests."""

import signal
import time


def kill_when(proc, ready, timeout=400):
    """SIGKILL ``proc`` as soon as ``ready()`` is true; True if it was still running then.

    Piped output is drained (``communicate``) so a chatty child cannot block on a full pipe;
    when the child ends (or times out) before ``ready()``, its last output is printed for the
    failing test's report.
    """
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    print(((out or "") + (err or ""))[-3000:])
    return False
