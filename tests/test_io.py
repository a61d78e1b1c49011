import json
import os

import numpy as np
import pytest

from as3l_plugin import io
from as3l_plugin.errors import InputError, OutputError, StaleInputError


def test_atomic_save_roundtrip_and_no_temp_left(tmp_path):
    p = tmp_path / "a.npy"
    io.atomic_save_npy(p, np.arange(5, dtype=np.int64))
    assert np.load(p).tolist() == [0, 1, 2, 3, 4]
    assert os.listdir(tmp_path) == ["a.npy"]


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "a.npy"
    io.atomic_save_npy(p, np.zeros(3))
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(io.os, "replace", boom)
    with pytest.raises(OutputError, match="No space left"):
        io.atomic_save_npy(p, np.ones(3))
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.npy"]


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        io.atomic_write_text(tmp_path / "nope" / "x.txt", "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            io.atomic_write_text(d / "x.txt", "x")
    finally:
        d.chmod(0o700)


def test_load_features_errors(tmp_path):
    bad = tmp_path / "x.npy"
    np.save(bad, np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match=r"x\.npy: features: 1 row\(s\) contain NaN"):
        io.load_features(bad)
    np.save(bad, np.zeros(3))
    with pytest.raises(InputError, match="2-D"):
        io.load_features(bad)
    txt = tmp_path / "f.npy"
    txt.write_text("hello")
    with pytest.raises(InputError, match="not a .npy"):
        io.load_features(txt)
    np.save(bad, np.zeros((100, 4)))
    bad.write_bytes(bad.read_bytes()[:-50])
    with pytest.raises(InputError, match="truncated"):
        io.load_features(bad)
    with pytest.raises(InputError, match="not found"):
        io.load_features(tmp_path / "missing.npy")
    X = io.load_features(_save(tmp_path / "ok.npy", np.ones((3, 2), dtype=np.float64)))
    assert X.dtype == np.float32 and X.flags.c_contiguous


def _save(p, a):
    np.save(p, a)
    return p


def test_sidecar_written_last_and_required(tmp_path):
    p = tmp_path / "prior.npy"
    io.write_with_sidecar(p, np.eye(2, dtype=np.float32), {"n": 2})
    assert json.loads(io.sidecar_path(p).read_text()) == {"n": 2}
    q = tmp_path / "other.npy"
    np.save(q, np.zeros(2))
    with pytest.raises(StaleInputError, match="no sidecar"):
        io.read_sidecar(q)


def test_index_filename_matches_usb():
    assert io.index_filename(40, 0) == "lb_labels40_1_seed0_idx.npy"
    assert io.index_filename(40, 3, prefix="ulb") == "ulb_labels40_1_seed3_idx.npy"


def test_sha256_array_depends_on_content_and_dtype():
    a = np.zeros((2, 2), dtype=np.float32)
    assert io.sha256_array(a) == io.sha256_array(a.copy())
    assert io.sha256_array(a) != io.sha256_array(a.astype(np.float64))
