"""`as3l run` / `as3l export-folder` on your own images: a tiny end-to-end run on a folder
exported from digits, the stage keys following the folder's files, CLI errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from as3l_plugin import pipeline as pl
from as3l_plugin import stages as sr
from as3l_plugin.cli import main

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "usb_configs" / "digits"


def folder_config(tmp, root, **extra):
    cfg = {
        "name": "tinyfolder", "dataset": "folder", "data_dir": str(root), "img_size": 8,
        "net": "cnn4", "num_labels": 10, "seed": 0,
        "pretrain": {"epochs": 1, "batch_size": 128},
        "finetune": {"epochs": 1},
        "usb": {"num_train_iter": 10, "num_eval_iter": 10, "num_log_iter": 10,
                "batch_size": 8, "uratio": 1, "eval_batch_size": 256},
        "as3l_flexmatch": {"config": str(DIGITS / "as3l_flexmatch_digits_10_0.yaml"),
                           "prior_T": 10, "prior_mode": "remove"},
        "baseline": {"enabled": False},
    }
    cfg.update(extra)
    path = Path(tmp) / "folder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("fold") / "digits"
    assert main(["export-folder", "digits", str(root), "--n", "300", "--n-test", "60",
                 "--quiet"]) == 0
    return root


def test_export_folder_cli(exported, tmp_path, capsys):
    assert sorted(p.name for p in exported.iterdir()) == ["classes.txt", "test", "train"]
    assert len(list((exported / "train").rglob("*.png"))) == 300
    assert len(list((exported / "test").rglob("*.png"))) == 60
    assert main(["export-folder", "digits", str(exported), "--n", "5", "--quiet"]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["export-folder", "nope", str(tmp_path / "x")]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_cli_folder_errors_are_one_line(exported, tmp_path, capsys):
    import shutil

    from PIL import Image
    mixed = tmp_path / "mixed"
    shutil.copytree(exported, mixed)
    Image.new("L", (12, 10)).save(mixed / "train" / "3" / "odd.png")  # not 8 x 8
    rc = main(["pretrain", "--dataset", "folder", "--data-dir", str(mixed), "--out",
               str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "img_size: is required" in err[0]
    (tmp_path / "empty" / "train").mkdir(parents=True)
    rc = main(["pretrain", "--dataset", "folder", "--data-dir", str(tmp_path / "empty"),
               "--img-size", "8", "--out", str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(tmp_path / "empty" / "train") in err[0]
    assert not (tmp_path / "p").exists()


def test_stage_keys_follow_the_folder_files(exported, tmp_path):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(exported, root)
    cfg = pl.load_config(folder_config(tmp_path, root))
    before = {s.name: s.params for s in pl.build_stages(cfg)}
    assert before["pretrain"]["data"]["options"]["img_size"] == 8
    (root / "train" / "3" / "999999.png").write_bytes((root / "train" / "3").iterdir()
                                                      .__next__().read_bytes())
    after = {s.name: s.params for s in pl.build_stages(cfg)}
    assert after["pretrain"] != before["pretrain"] and after["features"] != before["features"]
    digits = pl.load_config(folder_config(tmp_path, root, dataset="digits", data_dir=None))
    assert "data" not in {s.name: s.params for s in pl.build_stages(digits)}["pretrain"]


@pytest.mark.slow
def test_as3l_run_on_exported_folder(exported, tmp_path):
    cfg = folder_config(tmp_path, exported)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "as3l_plugin", "run", "--config", str(cfg),
                           "--out", str(tmp_path / "run")], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    run = tmp_path / "run"
    sel = next((run / "select").glob("lb_labels*_idx.npy"))
    side = json.loads(Path(str(sel) + ".json").read_text())
    from as3l_plugin.datasets import load_dataset
    ds = load_dataset("folder", exported, img_size=8, progress=False)
    assert side["dataset_files_sha256"] == ds.files_sha256 and side["n"] == 300
    prior_side = json.loads((run / "prior" / "prior.npy.json").read_text())
    assert prior_side["dataset_files_sha256"] == ds.files_sha256
    assert np.load(run / "prior" / "prior.npy").shape == (300, 10)
    metrics = (run / "train_as3l" / "usb" / "metrics.csv").read_text().splitlines()
    assert len(metrics) >= 2


def test_pipeline_budget_above_pool_size(exported, tmp_path):
    from as3l_plugin.errors import DatasetError
    cfg = pl.load_config(folder_config(tmp_path, exported, num_labels=400, pretrain={"epochs": 1},
                                       select={"features": "pixels"},
                                       prior={"features": "pixels"}))
    stages = [s for s in pl.build_stages(cfg) if s.name == "select"]
    with pytest.raises(DatasetError, match="fewer than the labeling budget") as e:
        sr.run_stages(stages, tmp_path / "r", log=lambda m: None)
    assert str(exported) in str(e.value)


def test_train_stage_without_labels_stage_on_folder(exported, tmp_path, monkeypatch):
    """The baseline's and the bench's trainings on a folder have a selection input and no
    `labels` stage: the selection's own labels file is passed to USB."""
    import as3l_plugin.usb.train as ut
    seen = {}

    def fake_train(conf, **kw):
        seen.update(conf)
        raise RuntimeError("stop here")
    monkeypatch.setattr(ut, "train", fake_train)
    cfg = pl.load_config(folder_config(tmp_path, exported))
    env = next(s for s in pl.build_stages(cfg) if s.name == "select").env
    sdir = tmp_path / "baseline_select"
    sdir.mkdir()
    (sdir / pl.LABELS).write_text("row,label\n0,1\n")
    sel = sr.StageRecord("baseline_select", sdir, "k", "f", {}, {"index_file": "idx.npy"}, 0.0)
    ctx = sr.StageContext("train_baseline", tmp_path / "t",
                          {"usb": {"algorithm": "flexmatch"}, "managed": {}},
                          {"baseline_select": sel}, False, lambda m: None, env)
    with pytest.raises(RuntimeError, match="stop here"):
        pl.stage_train(ctx)
    assert seen["lb_index_file"] == str(sdir / "idx.npy")
    assert seen["lb_labels_file"] == str(sdir / pl.LABELS) and seen["img_size"] == 8


def test_bench_config_takes_folder(exported, tmp_path):
    from as3l_plugin import bench
    cfg = bench.load_bench_config({
        "dataset": "folder", "data_dir": str(exported), "img_size": 8,
        "algorithms": {"flexmatch": {"config": str(DIGITS / "flexmatch_lbidx_digits_10_0.yaml")}}})
    b = bench.Bench(cfg, tmp_path / "b", log=lambda m: None)
    assert b.env["dataset_options"]["img_size"] == 8 and b.num_classes() == 10


@pytest.mark.slow
def test_as3l_run_on_unlabeled_pool_with_annotations(exported, tmp_path):
    """An unlabeled pool (images directly in train/) + classes.txt + test/: the run stops at
    the labels stage until the CSV exists, then trains on the annotations."""
    import csv
    import shutil
    root = tmp_path / "pool"
    shutil.copytree(exported, root)
    truth = {}
    for p in sorted((root / "train").rglob("*.png")):
        new = root / "train" / f"{p.parent.name}_{p.name}"
        p.rename(new)
        truth[f"train/{new.name}"] = int(p.parent.name)
    from as3l_plugin.datasets import load_dataset
    ds = load_dataset("folder", root, img_size=8, progress=False)
    assert (ds.y_train == -1).all()
    ann = tmp_path / "ann.csv"
    cfg = folder_config(tmp_path, root, labels={"source": "csv", "path": str(ann)},
                        select={"features": "pixels"}, prior={"features": "pixels"})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "as3l_plugin", "run", "--config", str(cfg), "--out",
           str(tmp_path / "run")]
    first = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, cwd=REPO, timeout=300)
    assert first.returncode == 2, first.stdout[-2000:]
    assert first.stdout.strip().splitlines()[-1].startswith("as3l: error:")
    rows = list(csv.DictReader(open(tmp_path / "run" / "select" / "to_annotate.csv")))
    with open(ann, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "label"])
        for r in rows:
            w.writerow([r["index"], truth[ds.paths[int(r["index"])]]])
    second = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=REPO, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:]
    usb_cfg = (tmp_path / "run" / "train_as3l" / "usb" / "log.txt")
    assert usb_cfg.is_file()
    assert np.load(tmp_path / "run" / "prior" / "prior.npy").shape == (300, 10)


@pytest.mark.slow
def test_cli_pretrain_features_select_prior_on_folder(exported, tmp_path):
    """The feature and offline commands on a folder; the file list reaches every sidecar."""
    from as3l_plugin.datasets import load_dataset
    ds = load_dataset("folder", exported, img_size=8, progress=False)
    d = str(exported)
    assert main(["pretrain", "--dataset", "folder", "--data-dir", d, "--img-size", "8",
                 "--epochs", "1", "--out", str(tmp_path / "pre"), "--quiet", "--workers", "1"]) == 0
    ck = str(tmp_path / "pre" / "backbone.pth")
    # --img-size defaults to the checkpoint's
    assert main(["features", "--checkpoint", ck, "--data-dir", d, "--out",
                 str(tmp_path / "f.npy"), "--quiet"]) == 0
    assert main(["linear-eval", "--features", str(tmp_path / "f.npy"), "--checkpoint", ck,
                 "--data-dir", d, "--quiet"]) == 0
    np.save(tmp_path / "y.npy", ds.y_train)
    assert main(["select", "--features", str(tmp_path / "f.npy"), "--budget", "10",
                 "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "sel")]) == 0
    assert main(["prior", "--features", str(tmp_path / "f.npy"), "--select-dir",
                 str(tmp_path / "sel"), "--num-classes", "10", "--out",
                 str(tmp_path / "prior.npy")]) == 0
    for f in ("f.npy.json", "sel/lb_labels10_1_seed0_idx.npy.json", "prior.npy.json"):
        side = json.loads((tmp_path / f).read_text())
        assert side["dataset_files_sha256"] == ds.files_sha256, f
