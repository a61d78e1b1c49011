"""patches/: unified diffs against USB (semilearn 0.3.2 = USB commit a8ec1d7, and its train.py).

The semilearn patches are applied to a temporary copy of the *installed* semilearn sources and
that copy is imported in a subprocess (PYTHONPATH first): the index file is honoured, the
random split stays out of the package directory, and FlexMatch trains, evaluates, saves and
resumes on CPU without the plugin. USB's train.py is not part of semilearn's wheel and the
repository ships none of it: its patch is checked against a USB checkout when one is found
(``$AS3L_USB_CHECKOUT``), and only for well-formedness otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PATCH_DIR = ROOT / "patches"
SEMILEARN_PATCHES = ["semilearn-cpu.patch", "semilearn-lb-index-file.patch"]
TRAIN_PATCH = "usb-train-py.patch"
#: sha256 of USB's train.py at a8ec1d7 ("Release semilearn==0.3.2"; unchanged up to 1ef4cbe)
USB_TRAIN_PY_SHA256 = "03d33f07c1336ee9a5de122c4f175576fd4fbab2b04654d77f7f5dc7578f4c2c"

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def parse_patch(text: str) -> dict:
    """Check a unified diff's structure; return {path: [(old_start, old_lines), ...]}."""
    files, lines, i = {}, text.splitlines(), 0
    assert lines, "empty patch"
    while i < len(lines):
        assert lines[i].startswith("--- a/"), f"line {i + 1}: expected '--- a/PATH', got {lines[i]!r}"
        old, new = lines[i][6:].split("\t")[0], lines[i + 1]
        assert new.startswith("+++ b/") and new[6:].split("\t")[0] == old, new
        i += 2
        hunks = files.setdefault(old, [])
        while i < len(lines) and lines[i].startswith("@@"):
            m = HUNK.match(lines[i])
            assert m, lines[i]
            o_start, o_len = int(m[1]), int(m[2] or 1)
            n_len = int(m[4] or 1)
            i += 1
            o = n = 0
            while i < len(lines) and (o < o_len or n < n_len):
                tag = lines[i][:1]
                if tag == "\\":  # "\ No newline at end of file"
                    i += 1
                    continue
                assert tag in (" ", "-", "+"), f"bad hunk line {lines[i]!r}"
                o += tag in (" ", "-")
                n += tag in (" ", "+")
                i += 1
            assert (o, n) == (o_len, n_len), f"{old}: hunk at {o_start} has {o}/{n} lines, header says {o_len}/{n_len}"
            while i < len(lines) and lines[i].startswith("\\"):
                i += 1
            hunks.append((o_start, o_len))
        assert hunks, f"{old}: no hunks"
    return files


def apply_patch(patch: Path, root: Path, *, dry_run=False):
    cmd = ["patch", "-p1", "--batch", "--forward", "-d", str(root), "-i", str(patch)]
    if dry_run:
        cmd.insert(1, "--dry-run")
    if shutil.which("patch") is None:  # git apply works outside a repository too
        cmd = ["git", "-C", str(root), "apply", "-p1"] + (["--check"] if dry_run else []) + [str(patch)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"


def installed_semilearn() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("semilearn")
    return Path(spec.origin).parent


@pytest.mark.parametrize("name", SEMILEARN_PATCHES + [TRAIN_PATCH])
def test_patch_is_well_formed(name):
    files = parse_patch((PATCH_DIR / name).read_text())
    if name == TRAIN_PATCH:
        assert list(files) == ["train.py"]
    else:
        assert all(p.startswith("semilearn/") for p in files)
        for path in files:  # every target exists in the installed package (semilearn 0.3.2)
            assert (installed_semilearn().parent / path).is_file(), path


@pytest.fixture(scope="module")
def patched_semilearn(tmp_path_factory):
    """A copy of the installed semilearn with both semilearn patches applied: its parent dir."""
    from importlib.metadata import version
    assert version("semilearn") == "0.3.2"
    root = tmp_path_factory.mktemp("patched")
    shutil.copytree(installed_semilearn(), root / "semilearn",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in SEMILEARN_PATCHES:
        apply_patch(PATCH_DIR / name, root, dry_run=True)
        apply_patch(PATCH_DIR / name, root)
    return root


def run_with(root: Path, script: str, cwd: Path, timeout=300) -> dict:
    """Run ``script`` in a fresh interpreter that imports semilearn from ``root``; the script
    prints one JSON line last."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(ROOT)]), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


SCRIPT = """
import json, os, sys, argparse
import numpy as np
import torchvision.datasets.cifar as tv
tv.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)  # synthetic files
def no_download(*a, **k):
    raise AssertionError("download attempted")
tv.download_and_extract_archive = no_download
import torch, semilearn
from semilearn.datasets.utils import split_ssl_data
from semilearn.lighting.config import get_config
from semilearn.algorithms import get_algorithm
from semilearn.core.utils import get_net_builder, send_model_cuda
out = dict(file=semilearn.__file__)

# 1. split_ssl_data with lb_index_file, bad files, and USB's random split
data = np.arange(20)[:, None] * np.ones((1, 3)); targets = np.arange(20) % 4
def split_args(f):
    return argparse.Namespace(lb_index_file=f, num_labels=4, dataset="toy", seed=0,
                              lb_imb_ratio=1, ulb_imb_ratio=1, save_dir="runs", save_name="r")
lb_x, lb_y, ulb_x, ulb_y = split_ssl_data(split_args("idx.npy"), data, targets, 4, 4)
out.update(lb=lb_x[:, 0].tolist(), ulb=ulb_x[:, 0].tolist(), errors=[])
for f in ("dup.npy", "far.npy", "missing.npy"):
    try:
        split_ssl_data(split_args(f), data, targets, 4, 4)
    except ValueError as e:
        out["errors"].append(str(e))
split_ssl_data(split_args(None), data, targets, 4, 4)

# 2. USB's FlexMatch (no plugin) on CPU: train, evaluate, save, resume
assert "as3l_plugin" not in sys.modules
cfg = dict(algorithm="flexmatch", net="wrn_28_2", dataset="cifar10", num_classes=10,
           data_dir="data", num_labels=10, lb_index_file="lb.npy", batch_size=2,
           uratio=1, eval_batch_size=10, num_train_iter=2, epoch=1, num_eval_iter=2,
           num_log_iter=1, num_workers=0, save_dir="runs", save_name="fm", seed=0,
           gpu="None", use_tensorboard=False)
args = get_config(cfg)
args.gpu, args.distributed = None, False
torch.manual_seed(0)
def build():
    alg = get_algorithm(args, get_net_builder(args.net, False), None, None)
    alg.model = send_model_cuda(args, alg.model)
    alg.ema_model = send_model_cuda(args, alg.ema_model, clip_batch=False)
    return alg
alg = build()
alg.train()
ckpt = os.path.join("runs", "fm", "latest_model.pth")
again = build()
again.load_model(ckpt)
out.update(
    device=str(next(alg.model.parameters()).device), it=again.it,
    saved_it=torch.load(ckpt, map_location="cpu", weights_only=False)["it"],
    sel_device=str(again.hooks_dict["MaskingHook"].selected_label.device),
    same=all(torch.equal(a, b) for a, b in zip(alg.model.state_dict().values(),
                                                again.model.state_dict().values())),
    lb_rows=alg.dataset_dict["train_lb"].data.reshape(10, -1)[:, :4].tolist(),
    acc=alg.log_dict.get("eval/top-1-acc"), prefetch="train/prefetch_time" in alg.log_dict,
    ulb_len=len(alg.dataset_dict["train_ulb"]))
print(json.dumps(out))
"""

SPLIT_IDX = np.array([7, 3, 11, 0], dtype=np.int64)


@pytest.fixture(scope="module")
def patched_run(patched_semilearn, tmp_path_factory):
    """One interpreter on the patched copy (importing semilearn is the slow part): the
    split checks and a FlexMatch CPU run. Returns (results, work dir, labeled idx)."""
    from test_usb_configs import write_synthetic_cifar
    work = tmp_path_factory.mktemp("patched_run")
    np.save(work / "idx.npy", SPLIT_IDX)
    np.save(work / "dup.npy", np.array([1, 1, 2, 3]))
    np.save(work / "far.npy", np.array([1, 2, 3, 99]))
    y = write_synthetic_cifar(work / "data", "cifar10", n_train=100, n_test=20)
    idx = np.concatenate([np.flatnonzero(y == c)[:1] for c in range(10)]).astype(np.int64)
    np.save(work / "lb.npy", idx)
    return run_with(patched_semilearn, SCRIPT, cwd=work), work, idx


@pytest.mark.slow
def test_patched_split_honours_lb_index_file(patched_semilearn, patched_run):
    out, work, _ = patched_run
    assert out["file"].startswith(str(patched_semilearn))  # the patched copy was imported
    assert out["lb"] == SPLIT_IDX.tolist()
    rest = [i for i in range(20) if i not in SPLIT_IDX]
    assert out["ulb"] == SPLIT_IDX.tolist() + rest  # include_lb_to_ulb: labeled first (USB)
    assert len(out["errors"]) == 3 and all("lb_index_file" in e for e in out["errors"])
    assert "duplicated" in out["errors"][0] and "out of range" in out["errors"][1]
    assert "not found" in out["errors"][2]
    # the random split's index files are written next to the run, not into the package
    assert list((work / "runs" / "r" / "usb_split").rglob("lb_labels4_1_seed0_idx.npy"))
    assert not (patched_semilearn / "data").exists()


@pytest.mark.slow
def test_patched_flexmatch_trains_and_resumes_on_cpu(patched_run):
    """USB's own FlexMatch (no plugin imported) on a synthetic CIFAR-10 folder, on CPU:
    2 iterations, evaluation, checkpoint, then a new instance resumes from it."""
    out, work, idx = patched_run
    assert out["device"] == "cpu" and out["sel_device"] == "cpu"
    assert out["it"] == out["saved_it"] >= 2 and out["same"] is True
    assert 0.0 <= out["acc"] <= 1.0 and out["prefetch"]
    assert out["ulb_len"] == 100  # include_lb_to_ulb: 10 labeled + 90 others
    # the labeled set is exactly the index file's rows, in file order
    import pickle
    folder = work / "data" / "cifar10" / "cifar-10-batches-py"
    data = np.vstack([pickle.loads((folder / f"data_batch_{i}").read_bytes())["data"]
                      for i in range(1, 6)])
    expect = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)[idx].reshape(10, -1)[:, :4]
    assert out["lb_rows"] == expect.tolist()


def _usb_train_py() -> str | None:
    """USB's train.py from $AS3L_USB_CHECKOUT (a checkout or a bare git dir of
    microsoft/Semi-supervised-learning), or None."""
    where = os.environ.get("AS3L_USB_CHECKOUT")
    if not where:
        return None
    p = Path(where)
    if (p / "train.py").is_file():
        return (p / "train.py").read_text()
    res = subprocess.run(["git", f"--git-dir={p}", "show", "a8ec1d7:train.py"],
                         capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else None


@pytest.mark.skipif(_usb_train_py() is None,
                    reason="USB's train.py not available: set AS3L_USB_CHECKOUT to a USB checkout")
@pytest.mark.slow
def test_train_py_patch_runs_as3l_flexmatch_on_cpu(patched_semilearn, tmp_path):
    """The patched USB train.py, with the patched semilearn and the plugin importable, trains
    as3l_flexmatch on digits on CPU from our config (a few iterations, a prior refresh)."""
    text = _usb_train_py()
    assert hashlib.sha256(text.encode()).hexdigest() == USB_TRAIN_PY_SHA256, \
        "not USB's train.py of semilearn 0.3.2"
    (tmp_path / "train.py").write_text(text)
    apply_patch(PATCH_DIR / TRAIN_PATCH, tmp_path, dry_run=True)
    apply_patch(PATCH_DIR / TRAIN_PATCH, tmp_path)

    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    run = tmp_path / "saved_models" / "as3l" / "digits" / "labels10_seed0"
    run.mkdir(parents=True)
    idx = np.array([np.flatnonzero(y == c)[0] for c in range(10)], dtype=np.int64)
    np.save(run / "lb_labels10_1_seed0_idx.npy", idx)
    prior = np.full((len(y), 10), 0.1, np.float32)
    np.save(run / "prior.npy", prior)
    cfg = (ROOT / "usb_configs" / "digits" / "as3l_flexmatch_digits_10_0.yaml").read_text()
    for key, value in dict(num_train_iter=4, num_eval_iter=4, num_log_iter=2, batch_size=4,
                           uratio=2, use_pretrain=False, prior_T=2, prior_update_interval=2,
                           prior_update_ks="[10, 20]").items():
        cfg = re.sub(rf"^{key}: .*$", f"{key}: {value}", cfg, flags=re.M)
    (tmp_path / "cfg.yaml").write_text(cfg)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(patched_semilearn), str(ROOT)]),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    res = subprocess.run([sys.executable, "train.py", "--c", "cfg.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-5000:]
    log = (tmp_path / "saved_models" / "cpu" / "as3l_flexmatch_digits_10_0" / "log.txt").read_text()
    assert "lb_dest_len=10" in log and "ulb_dest_len=1437" in log
    assert "prior refreshed at iteration 2" in log
    assert "training is FINISHED" in res.stderr + res.stdout + log
