"""Reproducibility (issue 7): same inputs and seed → byte-identical index and prior files,
on repeated runs and across processes; a fixed-seed CPU training repeats its losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from as3l_plugin.cli import main

from procs import kill_when

pytestmark = pytest.mark.slow  # trainings and other processes

REPO = Path(__file__).resolve().parents[1]

# one process: the CLI (select + prior) and every sampler / propagator through the API
SCRIPT = r"""
import sys, warnings
from pathlib import Path
import numpy as np


def produce(out, feats, labels):
    from as3l_plugin.cli import main
    from as3l_plugin.selection import get_sampler, list_samplers
    from as3l_plugin.propagation import get_propagator, list_propagators
    out = Path(out)
    warnings.simplefilter("ignore")
    assert main(["select", "--features", feats, "--budget", "8", "--sampler", "as3l",
                 "--seed", "3", "--labels", labels, "--out", str(out / "sel")]) == 0
    assert main(["prior", "--features", feats, "--select-dir", str(out / "sel"),
                 "--num-classes", "4", "--seed", "3", "--out", str(out / "prior.npy")]) == 0
    X, y = np.load(feats), np.load(labels)
    for s in list_samplers():
        np.save(out / f"idx_{s}.npy", get_sampler(s).select(X, 8, seed=5))
    idx = np.load(out / "idx_random.npy")
    for p in list_propagators():
        np.save(out / f"prior_{p}.npy", get_propagator(p).propagate(X, idx, y[idx], 4, seed=5))


if __name__ == "__main__":
    produce(*sys.argv[1:])
"""

#: sidecar fields that name the run's own paths (they differ between output folders)
PATH_FIELDS = {"features_file", "labels_file", "index_file", "paths"}


def _inputs(tmp):
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4.0, size=(4, 8))
    y = np.arange(240) % 4
    X = (centers[y] + rng.normal(size=(240, 8))).astype(np.float32)
    np.save(tmp / "X.npy", X)
    np.save(tmp / "y.npy", y)
    return str(tmp / "X.npy"), str(tmp / "y.npy")


def _run(out, feats, labels, *, subprocess_env=None):
    out.mkdir()
    if subprocess_env is None:
        ns = {"__name__": "repro"}
        exec(compile(SCRIPT, "<repro>", "exec"), ns)
        ns["produce"](str(out), feats, labels)
        return
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(out), feats, labels],
                       env={**os.environ, **subprocess_env}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_index_and_prior_files_are_byte_identical_across_runs_and_processes(tmp_path, capsys):
    feats, labels = _inputs(tmp_path)
    _run(tmp_path / "a", feats, labels)
    _run(tmp_path / "b", feats, labels)  # repeated, same process
    # another process, another hash seed and thread count
    _run(tmp_path / "c", feats, labels,
         subprocess_env={"PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1"})
    a = tmp_path / "a"
    names = _files(a)
    assert "sel/lb_labels8_1_seed3_idx.npy" in names and "prior.npy" in names
    assert len([n for n in names if n.startswith("idx_")]) >= 6
    for other in (tmp_path / "b", tmp_path / "c"):
        assert _files(other) == names
        for n in names:
            A, B = (a / n).read_bytes(), (other / n).read_bytes()
            if n.endswith(".json"):
                ja, jb = json.loads(A), json.loads(B)
                for k in PATH_FIELDS:
                    ja.pop(k, None), jb.pop(k, None)
                assert ja == jb, n
            else:
                assert A == B, f"{n} differs between {a.name} and {other.name}"
    P = np.load(a / "prior.npy")
    assert P.dtype == np.float32 and P.shape == (240, 4)


# --------------------------------------------------------------------------- training
torch = pytest.importorskip("torch")


class _Stop(Exception):
    pass


def _loss_recorder(stop_after=None):
    from semilearn.core.hooks import Hook

    class LossRecorder(Hook):
        """Every training step's logged losses (USB's log_dict, timings left out)."""

        def __init__(self):
            super().__init__()
            self.rows = []

        def after_train_step(self, algorithm):
            self.rows.append({k: float(v) for k, v in algorithm.log_dict.items()
                              if "time" not in k and k != "lr"})
            if stop_after is not None and len(self.rows) >= stop_after:
                raise _Stop

    return LossRecorder()


def tiny_training(ws: Path, **cfg):
    """as3l_flexmatch on digits: config tiny.yaml, lb.npy, prior.npy in ``ws``."""
    import bad_inputs as ts
    ws.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(ws)
    try:
        ts._train(Path("."), **cfg)
    finally:
        os.chdir(cwd)
    (ws / "runs" / "tiny" / "metrics.csv").unlink()
    (ws / "runs" / "tiny").rmdir()
    return ws / "tiny.yaml"


TRAIN_KW = dict(num_train_iter=12, epoch=3, num_eval_iter=4, num_log_iter=4, prior_T=6,
                uratio=2, batch_size=8)


@pytest.fixture(scope="module")
def reference_training(tmp_path_factory):
    """One uninterrupted run, single-threaded, with every step's losses recorded."""
    pytest.importorskip("semilearn")
    import as3l_plugin.usb  # noqa: F401
    from as3l_plugin.usb.train import train
    ws = tmp_path_factory.mktemp("ref")
    cfg = tiny_training(ws, **TRAIN_KW)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = _loss_recorder()
        cwd = os.getcwd()
        os.chdir(ws)
        try:
            res = train(str(cfg), hooks=[rec], lb_index_file=str(ws / "lb.npy"),
                        prior_file=str(ws / "prior.npy"), save_dir=str(ws / "runs"))
        finally:
            os.chdir(cwd)
    finally:
        torch.set_num_threads(threads)
    return {"ws": ws, "cfg": cfg, "losses": rec.rows, "result": res}


def test_fixed_seed_cpu_training_repeats_its_first_losses(reference_training, tmp_path):
    from as3l_plugin.usb.train import train
    ref = reference_training
    assert len(ref["losses"]) == TRAIN_KW["num_train_iter"]
    assert {"train/sup_loss", "train/unsup_loss", "train/total_loss"} <= set(ref["losses"][0])
    N = 8  # past prior_T = 6: both the prior-guided and the plain FlexMatch steps
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rec = _loss_recorder(stop_after=N)
    try:
        with pytest.raises(_Stop):
            train(str(ref["cfg"]), hooks=[rec], lb_index_file=str(ref["ws"] / "lb.npy"),
                  prior_file=str(ref["ws"] / "prior.npy"), save_dir=str(tmp_path / "runs"))
    finally:
        torch.set_num_threads(threads)
    assert rec.rows == ref["losses"][:N]
    # the losses are not trivially constant
    assert len({r["train/total_loss"] for r in ref["losses"]}) > 1


# --------------------------------------------------------------------------- SIGKILL
def _metrics(path):
    import csv
    keep = ("iteration", "eval_acc", "eval_loss", "eval_balanced_acc", "best_acc")
    with open(path, newline="") as fh:
        return [{k: r[k] for k in keep} for r in csv.DictReader(fh)]


def test_killed_as3l_train_resumes_to_the_uninterrupted_result(reference_training, tmp_path):
    """`as3l train` with resume: True and load_path = its own latest checkpoint, killed
    (SIGKILL) after its first checkpoint and run again, ends where the uninterrupted run
    ends: same evaluations, same final weights."""
    ref = reference_training
    save = tmp_path / "runs"
    ckpt = save / "tiny" / "latest_model.pth"
    cmd = [sys.executable, "-m", "as3l_plugin", "train", "--c", str(ref["cfg"]),
           "--save_dir", str(save), "--resume", "--load_path", str(ckpt),
           "--lb_index_file", str(ref["ws"] / "lb.npy"),
           "--prior_file", str(ref["ws"] / "prior.npy")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, cwd=ref["ws"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert kill_when(proc, ckpt.exists, timeout=300), "finished before a kill"
    assert not (save / "tiny" / "results.json").exists(), "killed too late to test resume"
    done = {r["iteration"] for r in _metrics(save / "tiny" / "metrics.csv")}
    assert done and str(TRAIN_KW["num_train_iter"]) not in done
    r = subprocess.run(cmd, env=env, cwd=ref["ws"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ref_dir = Path(ref["result"]["save_dir"])
    assert _metrics(save / "tiny" / "metrics.csv") == _metrics(ref_dir / "metrics.csv")
    a = torch.load(ref_dir / "latest_model.pth", map_location="cpu", weights_only=False)
    b = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert a["it"] == b["it"]
    for part in ("model", "ema_model"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
