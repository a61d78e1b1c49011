"""Sidecars are written last, and a data file without its sidecar is unfinished (issue 7).

Every writer is run with :func:`as3l_plugin.io.atomic_write_bytes` recording the order of
the files it completes: the sidecar (or the pipeline's ``stage.json``) must come after the
data it describes, so a kill between the two leaves a file its consumers refuse or redo.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from as3l_plugin import io as aio
from as3l_plugin.cli import main
from as3l_plugin.errors import StaleInputError


@pytest.fixture
def writes(monkeypatch):
    order = []
    real = aio.atomic_write_bytes

    def recording(path, data):
        out = real(path, data)
        order.append(Path(path).name)
        return out

    monkeypatch.setattr(aio, "atomic_write_bytes", recording)
    return order


@pytest.fixture
def feats(tmp_path, blobs):
    X, y = blobs
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path


def _last_is_sidecar_of(order, data_name):
    side = data_name + aio.SIDECAR_SUFFIX
    assert data_name in order and side in order, order
    assert order.index(side) > max(i for i, n in enumerate(order) if n == data_name)
    return order[-1] == side


def test_select_and_prior_write_their_sidecar_last(feats, writes, capsys):
    t = feats
    assert main(["select", "--features", str(t / "X.npy"), "--budget", "8", "--sampler",
                 "random", "--labels", str(t / "y.npy"), "--out", str(t / "sel")]) == 0
    lb = aio.index_filename(8, 0)
    assert _last_is_sidecar_of(writes, lb), writes
    assert set(writes) == {lb, lb + ".json", aio.index_filename(8, 0, prefix="ulb"),
                           "to_annotate.csv"}
    writes.clear()
    assert main(["prior", "--features", str(t / "X.npy"), "--select-dir", str(t / "sel"),
                 "--num-classes", "4", "--propagator", "knn", "--out",
                 str(t / "prior.npy")]) == 0
    assert writes == ["prior.npy", "prior.npy.json"]


def test_finetune_writes_its_sidecar_last(feats, writes, capsys):
    t = feats
    assert main(["finetune", "--features", str(t / "X.npy"), "--out", str(t / "F.npy"),
                 "--k", "4", "--epochs", "1", "--quiet", "--test-features", str(t / "X.npy"),
                 "--test-out", str(t / "Ft.npy")]) == 0
    assert _last_is_sidecar_of(writes, "Ft.npy")
    assert writes.index("F.npy.json") > writes.index("F.npy")


def test_index_without_sidecar_is_unfinished(feats, capsys):
    """A select killed between the index and its sidecar: `as3l prior` refuses the index."""
    t = feats
    assert main(["select", "--features", str(t / "X.npy"), "--budget", "8", "--sampler",
                 "random", "--labels", str(t / "y.npy"), "--out", str(t / "sel")]) == 0
    lb = t / "sel" / aio.index_filename(8, 0)
    aio.sidecar_path(lb).unlink()
    with pytest.raises(StaleInputError, match="unfinished"):
        main(["--debug", "prior", "--features", str(t / "X.npy"), "--select-dir",
              str(t / "sel"), "--num-classes", "4", "--out", str(t / "prior.npy")])
    assert not (t / "prior.npy").exists()


KILL_AT_SIDECAR = r"""
import os, signal, sys
from pathlib import Path
from as3l_plugin import io as aio
from as3l_plugin.cli import main
real = aio.atomic_write_bytes
def die_at_sidecar(path, data):
    if Path(path).name.startswith("lb_") and Path(path).name.endswith(".json"):
        os.kill(os.getpid(), signal.SIGKILL)  # killed right before the sidecar
    return real(path, data)
aio.atomic_write_bytes = die_at_sidecar
main(sys.argv[1:])
"""


@pytest.mark.parametrize("how", ["sigkill", "error"])
@pytest.mark.slow
def test_rerun_of_select_never_leaves_a_sidecar_vouching_for_other_data(feats, how,
                                                                        monkeypatch, capsys):
    """Re-running `as3l select` (same file names, another sampler): killed right before its
    sidecar, the index is left without one (unfinished); failing there (a full disk), the
    earlier index, annotation file and sidecar are all put back."""
    import os
    import subprocess
    import sys
    t = feats
    args = ["select", "--features", str(t / "X.npy"), "--budget", "8", "--labels",
            str(t / "y.npy"), "--out", str(t / "sel"), "--force"]
    assert main(args + ["--sampler", "random"]) == 0
    lb = t / "sel" / aio.index_filename(8, 0)
    before = {p.name: p.read_bytes() for p in (t / "sel").iterdir()}
    if how == "sigkill":
        r = subprocess.run([sys.executable, "-c", KILL_AT_SIDECAR, *args, "--sampler",
                            "coreset"], env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == -9
        assert aio.read_sidecar(lb, required=False) is None
        assert not np.array_equal(np.load(lb), np.frombuffer(b"", dtype=np.int64))
        with pytest.raises(StaleInputError, match="unfinished"):
            main(["--debug", "prior", "--features", str(t / "X.npy"), "--select-dir",
                  str(t / "sel"), "--num-classes", "4", "--out", str(t / "prior.npy")])
        assert main(args + ["--sampler", "coreset"]) == 0  # a re-run completes it
        assert aio.read_sidecar(lb)["sampler"] == "coreset"
        assert sorted(p.name for p in (t / "sel").iterdir()) == sorted(before)
    else:
        from as3l_plugin.errors import OutputError
        real = aio.atomic_write_bytes

        def full_at_sidecar(path, data):
            if Path(path).name == lb.name + ".json":
                raise OutputError("write failed (No space left on device)", path=path)
            return real(path, data)

        monkeypatch.setattr(aio, "atomic_write_bytes", full_at_sidecar)
        with pytest.raises(OutputError):
            main(["--debug", *args, "--sampler", "coreset"])
        after = {p.name: p.read_bytes() for p in (t / "sel").iterdir()}
        assert after == before


def test_pipeline_stage_file_is_written_last(tmp_path, writes):
    from as3l_plugin import stages as sr

    def fn(ctx):
        aio.atomic_save_npy(ctx.dir / "a.npy", np.arange(3))
        aio.atomic_write_json(ctx.dir / "b.json", {"x": 1})
        return {"ok": True}

    sr.run_stages([sr.Stage("s", fn, outputs=("a.npy", "b.json"))], tmp_path,
                  log=lambda m: None)
    assert writes[-1] == sr.STAGE_FILE and writes.index(sr.STAGE_FILE) > writes.index("a.npy")
    rec = json.loads((tmp_path / "s" / sr.STAGE_FILE).read_text())
    assert rec["stage"] == "s"


def test_pipeline_selection_writes_the_index_sidecar_last(tmp_path, writes):
    from as3l_plugin import pipeline as pl
    name = pl._write_selection(tmp_path, np.arange(4, dtype=np.int64),
                               {"budget": 4, "seed": 0, "n": 10}, labels=np.zeros(4, int))
    assert writes[-1] == name + ".json" and set(writes) == {name, name + ".json",
                                                            "to_annotate.csv"}
