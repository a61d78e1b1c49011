"""usb_configs/: every config parses through semilearn's own config path and ours, has the
paper's settings, and the CIFAR/STL ones train a few iterations on tiny synthetic folders in
torchvision's on-disk formats (nothing is downloaded)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "usb_configs"
#: USB-style configs (other YAML in usb_configs/, e.g. the pipeline's, are not USB configs)
USB_NAME = re.compile(r"^(as3l_flexmatch|flexmatch)(_lbidx)?_[a-z0-9_]+_\d+_\d+\.yaml$")
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if USB_NAME.match(p.name))
IDS = [p.stem for p in CONFIGS]
GPU_DATASETS = ("cifar10", "cifar100", "stl10")

# The key order of USB 0.3.2's config/classic_cv/flexmatch/*.yaml (key names only), with the
# one renamed key (clip -> clip_grad). Our configs must keep these keys in this order.
USB_FLEXMATCH_KEYS = [
    "algorithm", "save_dir", "save_name", "resume", "load_path", "overwrite", "use_tensorboard",
    "use_wandb", "epoch", "num_train_iter", "num_eval_iter", "num_log_iter", "num_labels",
    "batch_size", "eval_batch_size", "hard_label", "T", "thresh_warmup", "p_cutoff",
    "ulb_loss_ratio", "uratio", "ema_m", "crop_ratio", "img_size", "optim", "lr", "momentum",
    "weight_decay", "layer_decay", "amp", "clip_grad", "use_cat", "net", "net_from_name",
    "data_dir", "dataset", "train_sampler", "num_classes", "num_workers", "seed", "world_size",
    "rank", "multiprocessing_distributed", "dist_url", "dist_backend", "gpu",
]


def _generator():
    spec = importlib.util.spec_from_file_location("usb_configs_generate", CONFIG_DIR / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_with_semilearn(path) -> dict:
    """The YAML as USB's train.py reads it: semilearn's over_write_args_from_file (ruamel)."""
    from semilearn.core.utils import over_write_args_from_file
    ns = argparse.Namespace()
    over_write_args_from_file(ns, str(path))
    return vars(ns)


@pytest.fixture(scope="module")
def usb():
    import as3l_plugin.usb  # noqa: F401  (registers as3l_flexmatch, nets, datasets)
    return as3l_plugin.usb


def test_configs_exist_and_match_generator():
    assert len(CONFIGS) == 30
    gen = _generator()
    assert {p.resolve() for p in gen.expected_files()} == {p.resolve() for p in CONFIGS}
    assert gen.main(["--check"]) == 0, "run `python usb_configs/generate.py` and commit"


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_parses_through_semilearn_and_plugin(path, usb):
    from semilearn.algorithms import name2alg
    from semilearn.lighting.config import get_config as semilearn_get_config

    from as3l_plugin.commands.train import PLUGIN_ARGS
    from as3l_plugin.usb.train import get_config as plugin_get_config

    cfg = load_with_semilearn(path)
    assert cfg["save_name"] == path.stem
    assert cfg["load_path"] == f"{cfg['save_dir']}/{path.stem}/latest_model.pth"

    # semilearn's own parser (USB's get_config, from a dict) accepts it and keeps every value
    args = semilearn_get_config(dict(cfg))
    for key, value in cfg.items():
        if key != "dist_url":  # USB's get_config picks a free port
            assert getattr(args, key) == value, key

    # every key is one USB's parser, the algorithm (get_argument) or the plugin declares
    usb_keys = set(vars(semilearn_get_config({"algorithm": cfg["algorithm"]})))
    plugin_keys = {dest for _, dest, *_ in PLUGIN_ARGS}
    assert set(cfg) - usb_keys - plugin_keys == set()
    alg_keys = {a.name.lstrip("-") for a in name2alg[cfg["algorithm"]].get_argument()}
    assert alg_keys <= set(cfg), f"algorithm keys missing: {alg_keys - set(cfg)}"

    # USB's keys in USB's order; the plugin's keys next to their neighbours
    ours = [k for k in cfg if k in USB_FLEXMATCH_KEYS]
    assert ours == USB_FLEXMATCH_KEYS
    keys = list(cfg)
    if "lb_index_file" in cfg:
        assert keys[keys.index("lb_index_file") - 1] == "dataset"
    if cfg["algorithm"] == "as3l_flexmatch":
        i = keys.index("p_cutoff")
        assert keys[i + 1:i + 6] == ["prior_file", "prior_T", "prior_mode",
                                     "prior_update_interval", "prior_update_ks"]
        assert keys[keys.index("net_from_name") + 1:][:2] == ["use_pretrain", "pretrain_path"]

    # the plugin's parser (as3l train / train()) gives the same values, gpu normalised
    ours_args = plugin_get_config(str(path))
    for key, value in cfg.items():
        expect = None if (key == "gpu" and value == "None") else value
        assert getattr(ours_args, key) == expect, key
    if cfg["algorithm"] == "as3l_flexmatch":
        from as3l_plugin.usb.algorithm import int_list
        assert int_list(ours_args.prior_update_ks) == [10, 20, 30, 40, 50, 60]
    assert int(ours_args.num_train_iter) % int(ours_args.epoch) == 0

    # and `as3l train --c CONFIG` accepts it on the command line
    from as3l_plugin.cli import build_parser
    ns = build_parser().parse_args(["train", "--c", str(path), "--num_train_iter", "7"])
    assert ns.usb_flags.c == str(path) and ns.usb_flags.num_train_iter == "7"


PAPER = {  # (dataset, labels): (net, iterations, prior_mode)   — paper Sec. 4.1.3
    ("cifar10", 10): ("wrn_28_2", 112 * 1024, "update"),
    ("cifar10", 40): ("wrn_28_2", 112 * 2304, "remove"),
    ("cifar100", 200): ("wrn_28_8", 112 * 2304, "remove"),
    ("cifar100", 400): ("wrn_28_8", 112 * 2304, "remove"),
    ("stl10", 20): ("wrn_var_37_2", 112 * 2304, "remove"),
    ("stl10", 40): ("wrn_var_37_2", 112 * 2304, "remove"),
}


@pytest.mark.parametrize("setting", sorted(PAPER), ids=[f"{d}_{n}" for d, n in sorted(PAPER)])
def test_paper_settings(setting):
    dataset, n = setting
    net, iters, mode = PAPER[setting]
    as3l = load_with_semilearn(CONFIG_DIR / dataset / f"as3l_flexmatch_{dataset}_{n}_0.yaml")
    lbidx = load_with_semilearn(CONFIG_DIR / dataset / f"flexmatch_lbidx_{dataset}_{n}_0.yaml")
    std = load_with_semilearn(CONFIG_DIR / dataset / f"flexmatch_{dataset}_{n}_0.yaml")
    for cfg in (as3l, lbidx, std):
        assert (cfg["net"], cfg["num_labels"], cfg["dataset"]) == (net, n, dataset)
        assert (cfg["optim"], cfg["lr"], cfg["momentum"]) == ("SGD", 0.03, 0.9)
        assert (cfg["ulb_loss_ratio"], cfg["uratio"], cfg["batch_size"]) == (1.0, 7, 64)
        assert "num_warmup_iter" not in cfg  # USB's default 0: cosine from the first iteration
        assert cfg["num_classes"] == (100 if dataset == "cifar100" else 10)
    assert as3l["num_train_iter"] == lbidx["num_train_iter"] == iters
    assert std["num_train_iter"] == 1024 * 1024 and "lb_index_file" not in std
    assert (as3l["prior_T"], as3l["prior_mode"]) == (6900, mode)
    assert as3l["lb_index_file"] == lbidx["lb_index_file"]
    assert as3l["use_pretrain"] is True and as3l["pretrain_path"].endswith(f"simsiam_{net}/backbone.pth")
    # the sampler-swap baseline differs from the standard reference only by the index file and
    # the schedule
    diff = {k for k in set(lbidx) | set(std) if lbidx.get(k) != std.get(k)}
    assert diff == {"save_name", "load_path", "lb_index_file", "epoch", "num_train_iter",
                    "num_eval_iter"}


@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist"])
def test_cpu_configs(dataset):
    paths = [p for p in CONFIGS if p.parent.name == dataset]
    assert len(paths) == 6
    for path in paths:
        cfg = load_with_semilearn(path)
        assert cfg["net"] == "cnn4" and cfg["gpu"] == "None"
        assert cfg["multiprocessing_distributed"] is False and cfg["num_workers"] == 0
        assert cfg["batch_size"] <= 16 and cfg["num_train_iter"] <= 5000
        assert cfg["ema_m"] == 0.99  # 0.999 would lag over most of a short run
        if cfg["algorithm"] == "as3l_flexmatch":
            expect = "update" if cfg["num_labels"] == 10 else "remove"
            assert cfg["prior_mode"] == expect
            assert 0 < cfg["prior_T"] < cfg["num_train_iter"]


# ------------------------------------------------------------------ synthetic host folders
def write_synthetic_cifar(root: Path, name: str, n_train: int, n_test: int, seed: int = 0) -> np.ndarray:
    """torchvision's pickled CIFAR layout with random images; returns the train labels."""
    rng = np.random.default_rng(seed)
    c = 10 if name == "cifar10" else 100
    y_train = np.tile(np.arange(c), n_train // c + 1)[:n_train]
    rng.shuffle(y_train)
    y_test = np.arange(n_test) % c
    label_key = "labels" if name == "cifar10" else "fine_labels"

    def batch(y):
        return {"data": rng.integers(0, 256, (len(y), 3072), dtype=np.uint8),
                label_key: [int(v) for v in y]}

    if name == "cifar10":
        folder = root / "cifar10" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i, part in enumerate(np.array_split(y_train, 5), 1):
            (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(part)))
        (folder / "test_batch").write_bytes(pickle.dumps(batch(y_test)))
        (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(c)]}))
    else:
        folder = root / "cifar100" / "cifar-100-python"
        folder.mkdir(parents=True)
        (folder / "train").write_bytes(pickle.dumps(batch(y_train)))
        (folder / "test").write_bytes(pickle.dumps(batch(y_test)))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(c)]}))
    return y_train


def write_synthetic_stl10(root: Path, n_train: int, n_unlabeled: int, n_test: int, seed: int = 0):
    """torchvision's STL-10 binary layout (``stl10_binary/*.bin``); returns the train labels."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    y_train = np.arange(n_train) % 10
    for stem, n in (("train", n_train), ("unlabeled", n_unlabeled), ("test", n_test)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{stem}_X.bin")
    (y_train.astype(np.uint8) + 1).tofile(folder / "train_y.bin")
    ((np.arange(n_test) % 10).astype(np.uint8) + 1).tofile(folder / "test_y.bin")
    (folder / "class_names.txt").write_text("\n".join(str(i) for i in range(10)))
    return y_train


@pytest.fixture
def offline_host(monkeypatch):
    """Accept synthetic files in place of the real archives; any download attempt fails."""
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.stl10 as tv_stl10

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    def no_download(*a, **k):
        raise AssertionError("a test tried to download a dataset")

    for mod in (tv_cifar, tv_stl10):
        monkeypatch.setattr(mod, "check_integrity", exists)
        monkeypatch.setattr(mod, "download_and_extract_archive", no_download)


def _stratified(y, per_class, num_classes, rng):
    return np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                           for c in range(num_classes)]).astype(np.int64)


def prepare_offline_outputs(cfg: dict, y_pool: np.ndarray, y_lb_space, net_state):
    """Write what the configs expect from the offline stage, at the configs' own paths:
    the index file (into the labeled-index space), the prior (over the pool) and the
    SimSiam checkpoint ``{'model': state_dict}``."""
    rng = np.random.default_rng(1)
    c, n = cfg["num_classes"], cfg["num_labels"]
    if "lb_index_file" in cfg:
        idx = _stratified(np.asarray(y_lb_space), n // c, c, rng)
        Path(cfg["lb_index_file"]).parent.mkdir(parents=True, exist_ok=True)
        np.save(cfg["lb_index_file"], idx)
    if "prior_file" in cfg:
        prior = rng.dirichlet(np.ones(c), size=len(y_pool)).astype(np.float32)
        prior /= prior.sum(1, keepdims=True)
        np.save(cfg["prior_file"], prior)
    if cfg.get("use_pretrain"):
        Path(cfg["pretrain_path"]).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": net_state}, cfg["pretrain_path"])


GPU_CONFIGS = [p for p in CONFIGS if p.parent.name in GPU_DATASETS]

# tiny sizes: CIFAR-100 needs >= 4 labeled samples per class for @400
SYNTH = {"cifar10": dict(n_train=100, n_test=20), "cifar100": dict(n_train=500, n_test=100),
         "stl10": dict(n_train=60, n_unlabeled=40, n_test=20)}

TINY = dict(num_train_iter=2, epoch=1, num_eval_iter=2, num_log_iter=1, batch_size=2, uratio=1,
            eval_batch_size=128, num_workers=0, gpu="cpu", use_tensorboard=False)


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=[p.stem for p in GPU_CONFIGS])
@pytest.mark.slow
def test_gpu_config_trains_on_synthetic_folder(path, tmp_path, monkeypatch, offline_host, usb):
    """Each CIFAR/STL config, as written (data_dir, index/prior/pretrain paths relative to
    the run directory), with only sizes and the net made tiny: 2 iterations + evaluation."""
    from as3l_plugin.nets import cnn4_rgb
    from as3l_plugin.usb.train import train

    import semilearn
    monkeypatch.chdir(tmp_path)
    cfg = load_with_semilearn(path)
    dataset = cfg["dataset"]
    usb_dump = Path(semilearn.__file__).parents[1] / "data" / dataset  # USB's site-packages dump
    dumped_before = usb_dump.exists()
    if dataset == "stl10":
        y_lb = write_synthetic_stl10(Path(cfg["data_dir"]), **SYNTH[dataset])
        y_pool = np.concatenate([np.full(SYNTH[dataset]["n_unlabeled"], -1), y_lb])
    else:
        y_lb = y_pool = write_synthetic_cifar(Path(cfg["data_dir"]), dataset, **SYNTH[dataset])
    net = cnn4_rgb(num_classes=cfg["num_classes"])
    prepare_offline_outputs(cfg, y_pool, y_lb, net.state_dict())

    extra = {}
    if cfg["algorithm"] == "as3l_flexmatch":
        extra = dict(prior_T=1, prior_update_interval=1)  # the switch (and a refresh) happens
    res = train(str(path), net="cnn4_rgb", **TINY, **extra)

    run = Path(cfg["save_dir"]) / cfg["save_name"]
    assert Path(res["save_dir"]) == run.resolve()
    assert res["final_it"] == 2 and 0.0 <= res["final_acc"] <= 1.0
    assert (run / "metrics.csv").is_file() and (run / "latest_model.pth").is_file()
    ckpt = torch.load(run / "latest_model.pth", map_location="cpu", weights_only=False)
    if "lb_index_file" not in cfg:  # USB's random split, its index files kept out of site-packages
        assert list((run / "usb_split").rglob("lb_labels*_idx.npy"))
    if cfg["algorithm"] == "as3l_flexmatch":
        state = ckpt["as3l_prior"]
        assert state["mode"] == cfg["prior_mode"]
        assert state["version"] == (1 if cfg["prior_mode"] == "update" else 0)
    assert usb_dump.exists() == dumped_before  # nothing written into site-packages


@pytest.mark.parametrize("net,num_classes,img_size", [("wrn_28_2", 10, 32), ("wrn_28_8", 100, 32),
                                                       ("wrn_var_37_2", 10, 96)])
def test_config_nets_take_the_config_image_size(net, num_classes, img_size, tmp_path, usb):
    """The paper's backbones (as named in the configs) build and run at the configs' img_size;
    the small ones also load a ``{'model': state_dict}`` checkpoint (what ``pretrain_path``
    points at) through USB's loader, encoder only."""
    from semilearn.core.utils import get_net_builder
    builder = get_net_builder(net, False)
    model = builder(num_classes=num_classes)
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, 3, img_size, img_size))
    assert out["logits"].shape == (2, num_classes)
    if net == "wrn_28_8":  # 23M parameters: building it is the check
        return
    ckpt = tmp_path / "simsiam.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    loaded = builder(num_classes=num_classes, pretrained=True, pretrained_path=str(ckpt))
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        if not k.startswith(("fc", "classifier")):
            assert torch.equal(a, b), k
