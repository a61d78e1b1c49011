import os

import numpy as np
import pytest

# keep CPU runs reproducible and light on the 2-core CI machine
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: spawns a process, trains USB or pretrains, or takes more than about "
        "3 s; `pytest -m 'not slow' tests` is the quick loop")


@pytest.fixture
def blobs():
    """Four well-separated Gaussian blobs: X float32 (400, 8), y int64 (400,)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=20.0, size=(4, 8))
    y = np.repeat(np.arange(4), 100)
    X = (centers[y] + rng.normal(size=(400, 8))).astype(np.float32)
    return X, y.astype(np.int64)
