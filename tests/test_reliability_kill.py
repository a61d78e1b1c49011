"""SIGKILL survival of the long jobs (issue 7): a killed ``as3l pretrain`` / ``as3l bench``
re-run with the same command continues and ends with the outputs of an uninterrupted run.

(``as3l train``: tests/test_reliability_repro.py; ``as3l run``: tests/test_pipeline.py.)
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from procs import kill_when

pytestmark = pytest.mark.slow  # SIGKILLs real jobs in subprocesses

torch = pytest.importorskip("torch")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def as3l(*args, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "as3l_plugin", *map(str, args)], env=ENV,
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=400):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _epoch_of(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["epoch"]
    except Exception:  # not there yet
        return None


def test_killed_pretraining_resumes_to_the_uninterrupted_backbone(tmp_path):
    from as3l_plugin.features.pretrain import pretrain_defaults, pretrain_simsiam
    opts = {**pretrain_defaults("digits"), "epochs": 2, "batch_size": 128}
    ref = pretrain_simsiam("digits", "cnn4", out=tmp_path / "ref", seed=0, num_threads=1,
                           progress=False, **opts)
    out = tmp_path / "killed"
    cmd = ("pretrain", "--dataset", "digits", "--net", "cnn4", "--epochs", 2, "--batch-size",
           128, "--workers", 1, "--quiet", "--out", out)
    proc = as3l(*cmd)
    assert kill_when(proc, lambda: (out / "checkpoint.pth").exists()), "finished before a kill"
    assert not (out / "backbone.pth").exists(), "killed too late to test resume"
    assert _epoch_of(out / "checkpoint.pth") == 1
    finish(as3l(*cmd))
    a = torch.load(ref, map_location="cpu", weights_only=False)["model"]
    b = torch.load(out / "backbone.pth", map_location="cpu", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_killed_bench_resumes_to_the_uninterrupted_cells(tmp_path):
    import yaml

    from as3l_plugin import bench as bn
    digits = Path(__file__).resolve().parents[1] / "usb_configs" / "digits"
    cfg = {
        "name": "k", "dataset": "digits", "seeds": [0], "labels_per_class": [1],
        "samplers": {"as3l": {}}, "propagators": {"seeded_kmeans": {}},
        "algorithms": {"flexmatch": {"config": str(digits / "flexmatch_lbidx_digits_10_0.yaml")}},
        "pretrain": {"epochs": 1, "batch_size": 256}, "finetune": {"epochs": 1},
        "usb": {"num_train_iter": 12, "num_eval_iter": 4, "num_log_iter": 4, "batch_size": 8,
                "uratio": 1, "eval_batch_size": 512, "ema_m": 0.9},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ref, out = tmp_path / "ref", tmp_path / "killed"
    finish(as3l("bench", "--config", path, "--out", ref))
    proc = as3l("bench", "--config", path, "--out", out)
    # kill inside the first cell's training, after its first checkpoint
    ckpts = lambda: list((out / "cells").rglob("latest_model.pth"))  # noqa: E731
    assert kill_when(proc, lambda: bool(ckpts())), "finished before a kill"
    assert not (out / bn.CELLS_CSV).exists() or not bn.read_rows(out / bn.CELLS_CSV), \
        "killed too late to test resume"
    log = finish(as3l("bench", "--config", path, "--out", out))
    assert "resuming" in log
    keep = ("cell", "final_acc", "best_acc", "best_it", "last_it", "coverage", "prior_acc",
            "ece", "key")
    rows = lambda d: sorted(tuple(r[k] for k in keep) for r in bn.read_rows(d / bn.CELLS_CSV))  # noqa: E731
    assert len(rows(ref)) == 1 and rows(out) == rows(ref)
    priors = lambda d: sorted((d / "labels").rglob("prior.npy"))  # noqa: E731
    assert len(priors(ref)) == 1
    for a, b in zip(priors(ref), priors(out)):
        assert a.relative_to(ref) == b.relative_to(out) and a.read_bytes() == b.read_bytes()
