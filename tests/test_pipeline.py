"""`as3l run`: the real AS3L job (the stage runner itself: tests/test_stages.py)."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from as3l_plugin import pipeline as pl
from as3l_plugin import stages as sr
from as3l_plugin.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "usb_configs" / "digits"


def quiet(_msg):
    pass


STAGES = ["pretrain", "features", "select", "labels", "prior", "train_as3l",
          "baseline_select", "train_baseline", "evaluate"]


def tiny_config(tmp, *, iters=20, **extra):
    cfg = {
        "name": "tiny", "dataset": "digits", "net": "cnn4", "num_labels": 10, "seed": 0,
        "pretrain": {"epochs": 1, "batch_size": 256},
        "finetune": {"epochs": 2},
        "usb": {"num_train_iter": iters, "num_eval_iter": 10, "num_log_iter": 10,
                "batch_size": 8, "uratio": 1, "eval_batch_size": 512},
        "as3l_flexmatch": {"config": str(DIGITS / "as3l_flexmatch_digits_10_0.yaml"),
                           "prior_T": 10, "prior_mode": "remove"},
        "baseline": {"config": str(DIGITS / "flexmatch_lbidx_digits_10_0.yaml")},
    }
    cfg.update(extra)
    path = Path(tmp) / f"tiny_{iters}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def as3l(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "as3l_plugin", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=kw.get("cwd", REPO))


def finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.fixture(scope="module")
def run1(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tmp)
    out = finish(as3l("run", "--config", cfg, "--out", tmp / "run1"))
    return {"tmp": tmp, "cfg": cfg, "root": tmp / "run1", "log": out}


@pytest.mark.slow
def test_run_end_to_end_outputs(run1):
    root, log = run1["root"], run1["log"]
    for i, s in enumerate(STAGES, 1):
        assert f"[{i}/{len(STAGES)}] {s}: running" in log
        rec = json.loads((root / s / "stage.json").read_text())
        assert rec["stage"] == s and len(rec["key"]) == 64
    idx = np.load(root / "select" / "lb_labels10_1_seed0_idx.npy")
    assert idx.dtype == np.int64 and idx.shape == (10,) and len(set(idx.tolist())) == 10
    prior = np.load(root / "prior" / "prior.npy")
    assert prior.shape == (1437, 10) and prior.dtype == np.float32
    np.testing.assert_allclose(prior.sum(1), 1, atol=1e-5)
    assert (root / "pretrain" / "backbone.pth").is_file()
    for t, sel in (("train_as3l", "select"), ("train_baseline", "baseline_select")):
        assert (root / t / "usb" / "latest_model.pth").is_file()
        usb_log = (root / t / "usb" / "log.txt").read_text()  # USB trained on our index
        assert f"lb_index_file='{root / sel / 'lb_labels10_1_seed0_idx.npy'}'" in usb_log
    rows = list(csv.DictReader(open(root / "metrics.csv")))
    assert {r["algorithm"] for r in rows} == {"as3l_flexmatch", "flexmatch_random"}
    assert sorted({int(r["iteration"]) for r in rows}) == [10, 20]
    assert all(0 <= float(r["eval_acc"]) <= 1 for r in rows)
    for png in ("acc_vs_iteration.png", "prior_per_class.png"):
        assert (root / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (root / "summary.md").read_text()
    for needle in ("class coverage", "prior accuracy", "final test accuracy",
                   "best test accuracy", "iterations to reach", "speed-up", "Wall time",
                   "train_as3l"):
        assert needle in summary
    assert summary in log  # printed at the end
    ev = json.loads((root / "evaluate" / "stage.json").read_text())["result"]
    prior_acc = json.loads((root / "prior" / "stage.json").read_text())["result"]["prior_acc"]
    assert 0.3 < prior_acc <= 1.0  # far above chance even with 1 SimSiam epoch
    assert set(ev["runs"]) == {"as3l_flexmatch", "flexmatch_random"}


@pytest.mark.slow
def test_rerun_is_a_cache_hit(run1):
    root = run1["root"]
    before = {s: (root / s / "stage.json").stat().st_mtime_ns for s in STAGES}
    log = finish(as3l("run", "--config", run1["cfg"], "--out", root))
    for i, s in enumerate(STAGES, 1):
        assert f"[{i}/{len(STAGES)}] {s}: cached" in log
    assert "running" not in log
    assert {s: (root / s / "stage.json").stat().st_mtime_ns for s in STAGES} == before


@pytest.mark.slow
def test_killed_run_resumes_mid_training(run1):
    tmp, root = run1["tmp"], run1["tmp"] / "killed"
    cfg = tiny_config(tmp, iters=40, baseline={"enabled": False})
    proc = as3l("run", "--config", cfg, "--out", root)
    ckpt = root / "train_as3l" / "usb" / "latest_model.pth"
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:  # first complete checkpoint
        if ckpt.exists():
            try:
                torch.load(ckpt, map_location="cpu")
                break
            except Exception:  # still being written
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert ckpt.exists(), "the run ended before its first checkpoint"
    assert not (root / "train_as3l" / "stage.json").exists(), "killed too late to test resume"
    assert (root / "train_as3l" / sr.RUNNING_FILE).exists()
    log = finish(as3l("run", "--config", cfg, "--out", root))
    assert "train_as3l: resuming" in log and "resuming USB training from" in log
    for s in STAGES[:STAGES.index("train_as3l")]:
        assert f"{s}: cached" in log
    its = [int(r["iteration"]) for r in csv.DictReader(open(root / "metrics.csv"))
           if r["algorithm"] == "as3l_flexmatch"]
    assert sorted(set(its)) == [10, 20, 30, 40]
    # the stage's time counts the killed run's work up to its checkpoint as well
    st = json.loads((root / "train_as3l" / "stage.json").read_text())
    usb = list(csv.DictReader(open(root / "train_as3l" / "usb" / "metrics.csv")))
    assert float(usb[0]["cpu_time_s"]) > 0 and st["this_run_wall_s"] > 0
    assert st["wall_s"] > st["this_run_wall_s"] and st["cpu_s"] > st["this_run_cpu_s"]
    # the deterministic stages equal those of the uninterrupted run (other USB settings)
    for f in ("pretrain/backbone.pth", "features/f_self.npy",
              "select/lb_labels10_1_seed0_idx.npy", "prior/prior.npy"):
        assert (root / f).read_bytes() == (run1["root"] / f).read_bytes(), f


@pytest.mark.slow
def test_user_labels_csv(run1, tmp_path):
    """labels.source: csv — the run stops after `select` until the file exists, then the
    prior uses the user's labels (cached stages of the copied run are reused)."""
    root = tmp_path / "run"
    shutil.copytree(run1["root"], root)
    cfg = yaml.safe_load(run1["cfg"].read_text())
    cfg["labels"] = {"source": "csv", "path": str(tmp_path / "mine.csv")}
    from as3l_plugin.errors import LabelsError
    with pytest.raises(LabelsError, match="to_annotate.csv"):
        pl.run_pipeline(cfg, out=root, log=quiet)
    todo = list(csv.DictReader(open(root / "select" / "to_annotate.csv")))
    assert len(todo) == 10 and all(r["label"] == "" for r in todo)
    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    wrong = int(todo[0]["index"])
    lines = ["index,label"] + [f"{r['index']},{(y[int(r['index'])] + (1 if int(r['index']) == wrong else 0)) % 10}"
                               for r in todo]
    (tmp_path / "mine.csv").write_text("\n".join(lines) + "\n")
    stages = pl.build_stages(pl.load_config(cfg))
    recs = sr.run_stages(stages[:6], root, log=quiet)
    assert recs["select"].cached and not recs["labels"].cached
    assert recs["labels"].result["disagree_with_dataset"] == 1
    lab = pl._read_labels(recs["labels"])
    assert lab[lab[:, 0] == wrong, 1][0] == (y[wrong] + 1) % 10
    prior = np.load(root / "prior" / "prior.npy")
    assert prior[wrong].argmax() == (y[wrong] + 1) % 10  # labeled rows are the user's one-hot


@pytest.mark.slow
def test_moved_run_directory_keeps_the_priors_provenance(run1, tmp_path):
    """A run directory moved elsewhere (an exported bench, a copied run) re-makes a missing
    prior with its selection's sidecar found inside the moved directory, not at the old path."""
    root = tmp_path / "moved"
    shutil.copytree(run1["root"], root)
    shutil.rmtree(root / "prior")
    cfg = yaml.safe_load(run1["cfg"].read_text())
    recs = sr.run_stages(pl.build_stages(pl.load_config(cfg))[:5], root, log=quiet)
    assert recs["labels"].cached and not recs["prior"].cached
    side = json.loads((root / "prior" / "prior.npy.json").read_text())
    assert side["index_file"] == str((root / "select" / "lb_labels10_1_seed0_idx.npy").resolve())
    assert side["sampler"] == "as3l" and side["selection_seed"] == 0
    assert (root / "prior" / "prior.npy").read_bytes() == (run1["root"] / "prior" / "prior.npy").read_bytes()


@pytest.mark.slow
def test_annotate_source_stops_after_select_then_continues(run1, tmp_path):
    """labels.source: annotate — `as3l run` writes the page into <run>/annotate/, says what to
    do and exits 0 without training; an incomplete or bad CSV keeps it there (bad: exit 2,
    one line); the re-run with every image labeled (by name) trains and names the classes."""
    root = tmp_path / "run"
    shutil.copytree(run1["root"], root)
    cfg = yaml.safe_load(run1["cfg"].read_text())
    cfg["labels"] = {"source": "annotate"}
    cfg_path = tmp_path / "annotate.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = finish(as3l("run", "--config", cfg_path, "--out", root))
    adir = root / "annotate"
    assert "labels needed: 0 / 10 selected images have a class; nothing was trained" in out
    assert f"as3l annotate {adir} --serve" in out and str(adir / "annotate.html") in out
    assert f"then continue: as3l run --config {cfg_path} --out {root}" in out
    assert "train_as3l" not in out and "labels:" not in out, out
    for f in ("annotate.html", "contact_sheet.png", "lb_labels10_1_seed0_idx.npy",
              "lb_labels10_1_seed0_idx.npy.json"):
        assert (adir / f).is_file(), f
    todo = list(csv.DictReader(open(adir / "to_annotate.csv")))
    assert [r["label"] for r in todo] == [""] * 10 and set(todo[0]) == {"index", "label", "path"}
    idx = [int(r["index"]) for r in todo]
    assert idx == np.load(root / "select" / "lb_labels10_1_seed0_idx.npy").tolist()

    from as3l_plugin.datasets import load_dataset
    from as3l_plugin.errors import LabelsError
    y = load_dataset("digits").y_train
    rows = [f"{i},{y[i]}," for i in idx]
    (adir / "to_annotate.csv").write_text("index,label,path\n" + "\n".join(
        rows[:-1] + [f"{idx[-1]},skip,"]) + "\n")
    res = pl.run_pipeline(cfg_path, out=root, log=quiet)
    assert res["summary"] is None and "9 / 10" in res["awaiting_labels"]
    assert "(1 marked skip / unsure)" in res["awaiting_labels"]
    (adir / "to_annotate.csv").write_text("index,label,path\n" + "\n".join(rows + rows[:1]))
    with pytest.raises(LabelsError, match=r"to_annotate.csv:12: index: \d+ appears twice"):
        pl.run_pipeline(cfg_path, out=root, log=quiet)

    (adir / "to_annotate.csv").write_text("index,label,path\n" + "\n".join(rows) + "\n")
    res = pl.run_pipeline(cfg_path, out=root, log=quiet)
    assert res["summary"] and res["records"]["labels"].result["source"] == "annotate"
    assert not res["records"]["labels"].cached and res["records"]["select"].cached
    assert pl._read_labels(res["records"]["labels"])[:, 1].tolist() == y[idx].tolist()
    assert "## Per class" in res["summary"] and "| 9 |" in res["summary"]
    # a changed selection never overwrites the labels given for the old one
    bad = adir / "lb_labels10_1_seed0_idx.npy"
    np.save(bad, np.arange(10, dtype=np.int64))
    with pytest.raises(LabelsError, match=r"holds 10 label\(s\) of another selection"):
        pl.prepare_annotation(res["records"]["select"], root, {"dataset": "digits"})
    assert (adir / "to_annotate.csv").read_text().count("\n") == 11


def test_annotate_config_and_class_names_in_plots():
    base = {"dataset": "digits", "num_labels": 10,
            "as3l_flexmatch": {"config": str(DIGITS / "as3l_flexmatch_digits_10_0.yaml")},
            "baseline": {"enabled": False}}
    cfg = pl.load_config({**base, "labels": {"source": "annotate"}})
    assert pl.with_annotation_path(cfg, "/r")["labels"]["path"].endswith(
        "/r/annotate/to_annotate.csv")
    with pytest.raises(ConfigError, match="labels.path: is set by the pipeline"):
        pl.load_config({**base, "labels": {"source": "annotate", "path": "x.csv"}})
    with pytest.raises(ConfigError, match="annotate"):
        pl.load_config({**base, "labels": {"source": "browser"}})


def test_stratified_selection():
    y = np.repeat(np.arange(4), [5, 6, 7, 8])
    idx = pl.stratified_selection(y, 6, 4, seed=0)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 6
    assert sorted(np.bincount(y[idx], minlength=4).tolist()) == [1, 1, 2, 2]
    assert np.array_equal(idx, pl.stratified_selection(y, 6, 4, seed=0))


def test_config_errors(tmp_path):
    good = yaml.safe_load(tiny_config(tmp_path).read_text())
    with pytest.raises(ConfigError, match="unknown key"):
        pl.load_config({**good, "budget": 10})
    with pytest.raises(ConfigError, match="set by the pipeline"):
        pl.load_config({**good, "usb": {"seed": 3}})
    with pytest.raises(ConfigError, match="known datasets: digits"):
        pl.load_config({**good, "dataset": "mnist"})
    with pytest.raises(ConfigError, match="num_labels"):
        pl.load_config({k: v for k, v in good.items() if k != "num_labels"})
    with pytest.raises(ConfigError, match="multiple of num_eval_iter"):
        pl.build_stages(pl.load_config({**good, "usb": {**good["usb"], "num_eval_iter": 7}}))
    with pytest.raises(ConfigError, match="same iteration budget"):
        pl.build_stages(pl.load_config({**good, "baseline": {**good["baseline"],
                                                             "num_train_iter": 40}}))
    for ds in ("digits", "fashion_mnist"):  # the shipped configs load and plan
        stages = pl.build_stages(pl.load_config(REPO / "usb_configs" / ds / "pipeline.yaml"))
        assert [s.name for s in stages] == STAGES


@pytest.mark.slow
def test_feature_sets_pixels_and_auto(tmp_path):
    """``auto`` adds finetune + choose and records its pick and scores in the selection
    sidecar; ``pixels`` is PCA of the pixels; a self-only job has neither extra stage."""
    from as3l_plugin.datasets import load_dataset
    from as3l_plugin.features.choose import pixel_features
    from as3l_plugin.io import read_sidecar, sha256_array
    base = yaml.safe_load(tiny_config(tmp_path).read_text())
    plain = pl.build_stages(pl.load_config({**base, "select": {"features": "self"},
                                            "prior": {"features": "self"}}))
    assert "finetune" not in [s.name for s in plain] and "choose" not in [s.name for s in plain]
    cfg = pl.load_config({**base, "select": {"features": "auto"},
                          "prior": {"features": "pixels"}})
    keep = ("pretrain", "features", "finetune", "choose", "select", "labels", "prior")
    stages = [s for s in pl.build_stages(cfg) if s.name in keep]
    assert [s.name for s in stages] == list(keep)
    root = tmp_path / "auto"
    sr.run_stages(stages, root, log=quiet)
    choice = json.loads((root / "choose" / pl.CHOICE).read_text())
    assert set(choice["scores"]) == set(pl.AUTO_CANDIDATES)
    assert choice["pick"] in pl.AUTO_CANDIDATES
    side = read_sidecar(root / "select" / "lb_labels10_1_seed0_idx.npy")
    assert side["features"] == choice["pick"]
    assert side["features_choice"]["scores"] == choice["scores"]
    assert side["features_choice"]["criterion"] == choice["criterion"]
    pside = read_sidecar(root / "prior" / pl.PRIOR)
    assert pside["features"] == "pixels" and "features_choice" not in pside
    assert pside["features_sha256"] == sha256_array(pixel_features(load_dataset("digits").x_train))
    with pytest.raises(ConfigError, match="allowed: self, fine, pixels, auto"):
        pl.load_config({**base, "prior": {"features": "pixel"}})
