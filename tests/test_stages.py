"""The cached-stage runner (:mod:`as3l_plugin.stages`): cache keys, skip, invalidation, resume,
the run lock; on stand-in stages (the real job: tests/test_pipeline.py)."""

import json

import numpy as np
import pytest

from as3l_plugin import stages as sr
from as3l_plugin.errors import ConfigError, OutputError
from as3l_plugin.io import atomic_save_npy


# --------------------------------------------------------------------------- stand-in stages
class Calls:
    def __init__(self):
        self.n = {}

    def hit(self, name):
        self.n[name] = self.n.get(name, 0) + 1


def make_stages(calls, *, scale=1.0, fail_in=None):
    """a (writes a.npy from params) → b (doubles a, resumable) → c (sums b)."""
    def fa(ctx):
        calls.hit("a")
        atomic_save_npy(ctx.dir / "a.npy", np.arange(5, dtype=np.float32) * ctx.params["scale"])
        return {"n": 5}

    def fb(ctx):
        calls.hit("b")
        part = ctx.dir / "partial.txt"
        if ctx.resuming:
            assert part.read_text() == "half"
        else:
            assert not part.exists()
        part.write_text("half")
        if fail_in == "b":
            raise KeyboardInterrupt  # a kill in the middle of the stage
        a = np.load(ctx.inputs["a"].path("a.npy"))
        atomic_save_npy(ctx.dir / "b.npy", 2 * a)
        return {"resumed": ctx.resuming}

    def fc(ctx):
        calls.hit("c")
        b = np.load(ctx.inputs["b"].path("b.npy"))
        atomic_save_npy(ctx.dir / "c.npy", np.array([b.sum()]))
        return {"sum": float(b.sum())}

    return [sr.Stage("a", fa, params={"scale": scale}, outputs=("a.npy",)),
            sr.Stage("b", fb, inputs=("a",), outputs=("b.npy",), resumable=True),
            sr.Stage("c", fc, inputs=("b",), outputs=("c.npy",))]


def quiet(_msg):
    pass


def test_runs_then_all_cached(tmp_path):
    calls = Calls()
    recs = sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    assert calls.n == {"a": 1, "b": 1, "c": 1}
    assert recs["c"].result == {"sum": 20.0}
    for s in "abc":
        d = json.loads((tmp_path / s / "stage.json").read_text())
        assert d["key"] == recs[s].key and d["outputs"]
        assert not (tmp_path / s / sr.RUNNING_FILE).exists()
    mtimes = {s: (tmp_path / s / "stage.json").stat().st_mtime_ns for s in "abc"}
    recs2 = sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    assert calls.n == {"a": 1, "b": 1, "c": 1}
    assert all(recs2[s].cached for s in "abc")
    assert recs2["c"].result == {"sum": 20.0}
    assert {s: (tmp_path / s / "stage.json").stat().st_mtime_ns for s in "abc"} == mtimes


def test_changed_param_reruns_downstream_only(tmp_path):
    calls = Calls()
    sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    (tmp_path / "c" / "stray.txt").write_text("left by an older run")
    recs = sr.run_stages(make_stages(calls, scale=3.0), tmp_path, log=quiet)
    assert calls.n == {"a": 2, "b": 2, "c": 2}
    assert recs["c"].result == {"sum": 60.0}
    assert not (tmp_path / "c" / "stray.txt").exists()  # a re-run starts from an empty dir


def test_forced_stage_with_same_bytes_keeps_dependants(tmp_path):
    calls = Calls()
    sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    recs = sr.run_stages(make_stages(calls), tmp_path, force=["a"], log=quiet)
    assert calls.n == {"a": 2, "b": 1, "c": 1}
    assert not recs["a"].cached and recs["b"].cached
    sr.run_stages(make_stages(calls), tmp_path, force=["all"], log=quiet)
    assert calls.n == {"a": 3, "b": 2, "c": 2}
    with pytest.raises(ConfigError, match="unknown stage"):
        sr.run_stages(make_stages(calls), tmp_path, force=["nope"], log=quiet)


def test_tampered_output_reruns_stage_and_dependants(tmp_path):
    calls = Calls()
    sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    atomic_save_npy(tmp_path / "a" / "a.npy", np.ones(5, dtype=np.float32))
    recs = sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    assert calls.n == {"a": 2, "b": 1, "c": 1}  # a rewrote the same bytes → b, c still valid
    assert recs["b"].cached
    (tmp_path / "b" / "b.npy").unlink()
    sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    assert calls.n == {"a": 2, "b": 2, "c": 1}


def test_resumed_stage_records_the_time_of_the_work_it_kept(tmp_path):
    """A resumed stage that accounts for its earlier runs' time records the whole stage's in
    wall_s / cpu_s and this run's apart; a fresh run records only its own."""
    def fn(ctx):
        if ctx.resuming:
            ctx.add_earlier_time(100.0, 40.0)
        else:
            (ctx.dir / "partial.txt").write_text("half")
            raise KeyboardInterrupt
        (ctx.dir / "out.txt").write_text("done")
        return {}

    st = [sr.Stage("t", fn, outputs=("out.txt",), resumable=True)]
    with pytest.raises(KeyboardInterrupt):
        sr.run_stages(st, tmp_path, log=quiet)
    rec = sr.run_stages(st, tmp_path, log=quiet)["t"]
    d = json.loads((tmp_path / "t" / "stage.json").read_text())
    assert d["resumed"] and d["wall_s"] == pytest.approx(100.0 + d["this_run_wall_s"], abs=2e-3)
    assert d["cpu_s"] == pytest.approx(40.0 + d["this_run_cpu_s"], abs=2e-3)
    assert rec.wall_s == pytest.approx(d["wall_s"], abs=1e-3) and rec.wall_s >= 100.0
    assert sr.load_record(tmp_path / "t").cpu_s == pytest.approx(d["cpu_s"])
    # unknown earlier CPU time: NaN, not this run's alone
    def fn2(ctx):
        ctx.add_earlier_time(1.0, None)
        (ctx.dir / "out.txt").write_text("done")
        return {}
    rec2 = sr.run_stages([sr.Stage("u", fn2, outputs=("out.txt",))], tmp_path, log=quiet)["u"]
    assert rec2.wall_s >= 1.0 and np.isnan(rec2.cpu_s)
    text = (tmp_path / "u" / "stage.json").read_text()
    assert "NaN" not in text and json.loads(text)["cpu_s"] is None  # strict JSON: null
    again = sr.run_stages([sr.Stage("u", fn2, outputs=("out.txt",))], tmp_path, log=quiet)["u"]
    assert again.cached and np.isnan(again.cpu_s)  # and the record still loads
    # a fresh run that adds nothing has no this_run_* fields
    sr.run_stages(make_stages(Calls()), tmp_path / "f", log=quiet)
    assert "this_run_wall_s" not in json.loads((tmp_path / "f" / "b" / "stage.json").read_text())


def test_killed_resumable_stage_resumes_and_others_restart(tmp_path):
    calls = Calls()
    with pytest.raises(KeyboardInterrupt):
        sr.run_stages(make_stages(calls, fail_in="b"), tmp_path, log=quiet)
    assert (tmp_path / "b" / sr.RUNNING_FILE).is_file()
    assert not (tmp_path / "b" / "stage.json").exists()
    recs = sr.run_stages(make_stages(calls), tmp_path, log=quiet)
    assert recs["a"].cached and recs["b"].result == {"resumed": True}
    assert calls.n == {"a": 1, "b": 2, "c": 1}
    # a resumable stage whose key changed starts from an empty directory
    with pytest.raises(KeyboardInterrupt):
        sr.run_stages(make_stages(calls, fail_in="b"), tmp_path, force=["b"], log=quiet)
    recs = sr.run_stages(make_stages(calls, scale=2.0), tmp_path, log=quiet)
    assert recs["b"].result == {"resumed": False}


def test_missing_output_and_lock_are_errors(tmp_path):
    st = sr.Stage("x", lambda ctx: {}, outputs=("never.npy",))
    with pytest.raises(OutputError, match="never.npy"):
        sr.run_stages([st], tmp_path, log=quiet)
    assert not (tmp_path / "x" / "stage.json").exists()
    with sr.run_lock(tmp_path):
        with pytest.raises(OutputError, match="another as3l process"):
            with sr.run_lock(tmp_path):
                pass


def test_lock_held_reads_the_lock_and_run_lock_waits_out_a_reader(tmp_path):
    """lock_held: False without a lock file (and creates none), True while run_lock holds it;
    run_lock waits for a reader's instant shared lock instead of failing."""
    import fcntl
    import threading
    import time
    assert sr.lock_held(tmp_path) is False and not (tmp_path / sr.LOCK_FILE).exists()
    with sr.run_lock(tmp_path):
        assert sr.lock_held(tmp_path) is True
    assert sr.lock_held(tmp_path) is False
    fh = open(tmp_path / sr.LOCK_FILE)
    fcntl.flock(fh, fcntl.LOCK_SH)                   # a reader, released 0.3 s from now
    threading.Thread(target=lambda: (time.sleep(0.3), fh.close())).start()
    with sr.run_lock(tmp_path):
        pass


def test_cache_key_depends_on_everything():
    k = sr.cache_key("s", {"a": 1}, {"up": "f"}, version="1")
    assert k == sr.cache_key("s", {"a": 1}, {"up": "f"}, version="1")
    assert len({k, sr.cache_key("t", {"a": 1}, {"up": "f"}, version="1"),
                sr.cache_key("s", {"a": 2}, {"up": "f"}, version="1"),
                sr.cache_key("s", {"a": 1}, {"up": "g"}, version="1"),
                sr.cache_key("s", {"a": 1}, {"up": "f"}, version="2")}) == 5
