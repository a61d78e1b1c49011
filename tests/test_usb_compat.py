"""One test (or a few) per runtime shim of as3l_plugin.usb.compat (CPU, tiny data)."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("semilearn")

import as3l_plugin.usb  # noqa: E402,F401  (applies the shims)
from as3l_plugin.errors import ConfigError, InputError  # noqa: E402
from as3l_plugin.usb import compat  # noqa: E402
from as3l_plugin.usb.train import build_algorithm, get_config  # noqa: E402

TINY = Path(__file__).with_name("usb_tiny.yaml")


def tiny_args(tmp_path, **kw):
    kw.setdefault("save_dir", str(tmp_path / "runs"))
    kw.setdefault("algorithm", "flexmatch")
    return get_config(TINY, shared=True, **kw)  # one tiny config for every algorithm


# --------------------------------------------------------------------------- 1. nets
def test_nets_registered_and_reversible():
    import semilearn.nets as snets
    from semilearn.core.utils import get_net_builder

    from as3l_plugin.nets import NETS
    assert snets.cnn4 is NETS["cnn4"] and snets.cnn4_rgb is NETS["cnn4_rgb"]
    assert get_net_builder("cnn4", False) is NETS["cnn4"]
    compat.unregister_nets()
    try:
        assert not hasattr(snets, "cnn4")
    finally:
        compat.register_nets()
    assert snets.cnn4 is NETS["cnn4"]


def test_nets_refuse_to_shadow_a_usb_net(monkeypatch):
    import semilearn.nets as snets
    monkeypatch.setattr(snets, "cnn4", lambda **kw: None)
    with pytest.raises(ConfigError, match="cnn4"):
        compat.register_nets()


# --------------------------------------------------------------------------- 2. datasets
def test_dataset_dispatch_installed_and_builds_digits(tmp_path):
    import semilearn.core.algorithmbase as ab
    assert ab.get_dataset is compat.get_dataset
    args = tiny_args(tmp_path)
    d = compat.get_dataset(args, "flexmatch", "digits", 20, 10, "./data", True)
    assert set(d) == {"train_lb", "train_ulb", "eval", "test"} and d["test"] is None
    assert len(d["train_lb"]) == 20 and len(d["train_ulb"]) == 1437 and len(d["eval"]) == 360
    # labeled first in the unlabeled set (USB's include_lb_to_ulb layout)
    np.testing.assert_array_equal(d["train_ulb"].orig_index[:20], d["train_lb"].orig_index)
    item = d["train_ulb"][0]
    assert item["x_ulb_w"].shape == (1, 8, 8) and item["x_ulb_s"].shape == (1, 8, 8)
    assert d["eval"][0]["x_lb"].shape == (1, 8, 8)
    # unknown names still fall through to USB (which returns None)
    assert compat.get_dataset(args, "flexmatch", "no_such_dataset", 20, 10) is None


def test_dataset_dispatch_is_reversible():
    import semilearn.core.algorithmbase as ab
    compat.uninstall_dataset_dispatch()
    try:
        assert ab.get_dataset is not compat.get_dataset
    finally:
        compat.install_dataset_dispatch()
    assert ab.get_dataset is compat.get_dataset


# --------------------------------------------------------------------------- 3. split
class _FakeCIFAR10:
    """Stands in for torchvision.datasets.CIFAR10 (no download): 100 train / 30 test."""

    def __init__(self, root, train=True, download=False, **kw):
        rng = np.random.RandomState(1 if train else 2)
        n = 100 if train else 30
        self.data = rng.randint(0, 256, (n, 32, 32, 3)).astype(np.uint8)
        self.targets = list(np.arange(n) % 10)


class _FakeSTL10:
    """Stands in for torchvision.datasets.STL10: 50 train, 70 unlabeled, 20 test (16 px)."""

    def __init__(self, root, split="train", download=False, **kw):
        n = {"train": 50, "unlabeled": 70, "test": 20}[split]
        rng = np.random.RandomState(len(split))
        self.data = rng.randint(0, 256, (n, 3, 16, 16)).astype(np.uint8)
        self.labels = (np.arange(n) % 10) if split != "unlabeled" else -np.ones(n, np.int64)


@pytest.fixture
def fake_vision(monkeypatch, tmp_path):
    import torchvision
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeCIFAR10)
    monkeypatch.setattr(torchvision.datasets, "STL10", _FakeSTL10)
    monkeypatch.chdir(tmp_path)  # USB's stl10 writes ./data_statistics/


@pytest.mark.parametrize("algorithm", ["flexmatch", "fixmatch", "fullysupervised"])
def test_lb_index_file_injected_into_usb_cifar(tmp_path, fake_vision, algorithm):
    lb = np.array([5, 17, 33, 2, 91, 60, 44, 78, 10, 29], dtype=np.int64)
    np.save(tmp_path / "lb.npy", lb)
    args = tiny_args(tmp_path, algorithm=algorithm, dataset="cifar10", net="cnn4_rgb",
                     num_labels=10, img_size=32, lb_index_file=str(tmp_path / "lb.npy"))
    alg = build_algorithm(args)
    d = alg.dataset_dict
    full = _FakeCIFAR10(None)
    np.testing.assert_array_equal(d["train_lb"].orig_index, lb)
    np.testing.assert_array_equal(d["train_lb"].data, full.data[lb])
    np.testing.assert_array_equal(d["train_lb"].targets, np.asarray(full.targets)[lb])
    ulb = d["train_ulb"]
    assert len(ulb) == 100 and set(ulb.orig_index[10:]) == set(range(100)) - set(lb)
    np.testing.assert_array_equal(ulb.orig_index[:10], lb)  # labeled first (include_lb_to_ulb)
    np.testing.assert_array_equal(ulb.data, full.data[ulb.orig_index])
    # the scoped patches are gone again
    import semilearn.datasets.cv_datasets.cifar as cifar
    assert cifar.split_ssl_data is compat._ORIGINALS["split_ssl_data"]


def test_usb_random_split_kept_and_written_outside_site_packages(tmp_path, fake_vision):
    import semilearn.datasets.utils as dutils
    base_dir = dutils.base_dir
    args = tiny_args(tmp_path, dataset="cifar10", net="cnn4_rgb", num_labels=10)
    alg = build_algorithm(args)
    lb = alg.dataset_dict["train_lb"].orig_index
    assert len(lb) == 10 and sorted(np.asarray(_FakeCIFAR10(None).targets)[lb]) == list(range(10))
    written = list((tmp_path / "runs" / "tiny" / "usb_split").rglob("lb_labels10_1_seed0_idx.npy"))
    assert len(written) == 1
    np.testing.assert_array_equal(np.load(written[0]), lb)
    assert dutils.base_dir == base_dir  # restored after the call


def test_lb_index_file_injected_into_usb_stl10(tmp_path, fake_vision):
    lb = np.arange(0, 50, 5, dtype=np.int64)
    np.save(tmp_path / "lb.npy", lb)
    args = tiny_args(tmp_path, dataset="stl10", net="cnn4_rgb", num_labels=10, img_size=16,
                     lb_index_file=str(tmp_path / "lb.npy"))
    d = build_algorithm(args).dataset_dict
    train, unl = _FakeSTL10(None, "train"), _FakeSTL10(None, "unlabeled")
    pool = np.concatenate([unl.data, train.data]).transpose(0, 2, 3, 1)  # USB's pool order
    np.testing.assert_array_equal(d["train_lb"].data, train.data[lb].transpose(0, 2, 3, 1))
    ulb = d["train_ulb"]
    assert ulb.orig_len == 120 and len(ulb) == 130
    np.testing.assert_array_equal(ulb.data, pool[ulb.orig_index])
    np.testing.assert_array_equal(d["train_lb"].orig_index, 70 + lb)


@pytest.mark.parametrize("content, match", [
    (np.array([1, 2, 2, 3]), "duplicated"),
    (np.array([1, 2, 3]), "num_labels=4"),
    (np.array([1, 2, 3, 5000]), "out of range"),
    (np.array([[1, 2], [3, 4]]), "1-D"),
    (np.array([1.0, 2.0, 3.0, 4.0]), "integer"),
])
def test_load_lb_index_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "lb.npy"
    np.save(path, content)
    with pytest.raises(InputError, match=match) as err:
        compat.load_lb_index(path, n_samples=100, num_labels=4)
    assert "lb_index_file" in str(err.value) and str(path) in str(err.value)


def test_load_lb_index_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="lb_index_file"):
        compat.load_lb_index(tmp_path / "nope.npy", n_samples=10, num_labels=2)


def test_lb_index_file_bad_count_fails_building_digits(tmp_path):
    np.save(tmp_path / "lb.npy", np.arange(7))
    args = tiny_args(tmp_path, lb_index_file=str(tmp_path / "lb.npy"))
    with pytest.raises(InputError, match="num_labels=20"):
        build_algorithm(args)


# --------------------------------------------------------------------------- 4. device
def test_cpu_tensor_cuda_is_a_noop():
    t = torch.arange(3.0)
    c = compat.as_cpu_tensors({"x": t, "n": 1})
    out = c["x"].cuda(0)
    assert type(out) is torch.Tensor and out.device.type == "cpu" and torch.equal(out, t)
    assert c["n"] == 1


def test_resolve_device(monkeypatch):
    from types import SimpleNamespace as NS
    assert compat.resolve_device(NS(gpu="cpu")).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compat.resolve_device(NS(gpu="None")).type == "cpu"  # None: CUDA when present
    with pytest.raises(ConfigError, match=r"^gpu: gpu=0 asks for CUDA"):  # never a silent CPU run
        compat.resolve_device(NS(gpu=0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert compat.resolve_device(NS(gpu=None)) == torch.device("cuda")
    assert compat.resolve_device(NS(gpu=1)) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="2 CUDA device"):
        compat.resolve_device(NS(gpu=2))


@pytest.mark.parametrize("algorithm", ["fixmatch", "flexmatch", "freematch", "softmatch",
                                       "fullysupervised"])
def test_cpu_step_evaluate_checkpoint_roundtrip(tmp_path, algorithm):
    """process_batch, train_step, evaluate, save/load (USB's .cuda() calls) on CPU."""
    args = tiny_args(tmp_path, algorithm=algorithm, gpu="cpu")
    alg = build_algorithm(args)
    assert alg.device.type == "cpu" and alg.ngpus_per_node == 1
    names = {type(h).__name__ for h in alg._hooks}
    assert {"WallTimerHook", "WallParamUpdateHook", "MetricsCSVHook"} <= names
    assert "TimerHook" not in names and "ParamUpdateHook" not in names
    alg.model.train()
    alg.call_hook("before_run")
    alg.epoch = 0
    data_lb = next(iter(alg.loader_dict["train_lb"]))
    data_ulb = next(iter(alg.loader_dict["train_ulb"]))
    alg.call_hook("before_train_step")
    alg.out_dict, alg.log_dict = alg.train_step(**alg.process_batch(**data_lb, **data_ulb))
    alg.call_hook("after_train_step", "ParamUpdateHook")
    alg.call_hook("after_train_step", "TimerHook")
    assert alg.log_dict["train/run_time"] > 0 and "train/prefetch_time" in alg.log_dict
    ev = alg.evaluate("eval")
    assert 0.0 <= ev["eval/top-1-acc"] <= 1.0
    path = tmp_path / "ck.pth"
    alg.save_model(path.name, str(tmp_path))
    state = {k: v.clone() for k, v in alg.model.state_dict().items()}
    other = build_algorithm(tiny_args(tmp_path, algorithm=algorithm, gpu="cpu", seed=3))
    other.load_model(str(path))
    assert all(torch.equal(state[k], v) for k, v in other.model.state_dict().items())
    if algorithm == "flexmatch":
        hook = other.hooks_dict["MaskingHook"]
        assert hook.classwise_acc.device.type == "cpu" and type(hook.classwise_acc) is torch.Tensor


# --------------------------------------------------------------------------- 5. checkpoint extras
def test_rng_state_roundtrip_through_torch_load(tmp_path):
    import random
    state = compat.rng_state()
    torch.save({"s": state}, tmp_path / "r.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)
    loaded = torch.load(tmp_path / "r.pth", map_location="cpu")  # weights_only default
    compat.set_rng_state(loaded["s"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_plugin_class_mro_puts_checkpoint_shim_above_algorithmbase():
    from semilearn.algorithms.flexmatch import FlexMatch
    from semilearn.core import AlgorithmBase
    cls = compat.plugin_algorithm(FlexMatch)
    mro = [c.__name__ for c in cls.__mro__]
    assert mro.index("DevicePlugin") < mro.index("FlexMatch") < mro.index("CheckpointDevice") \
        < mro.index("AlgorithmBase")
    assert compat.plugin_algorithm(FlexMatch) is cls and issubclass(cls, AlgorithmBase)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    alg = build_algorithm(tiny_args(tmp_path, gpu="cpu"))
    alg.epoch = 0
    alg.save_model("latest_model.pth", str(tmp_path))
    before = (tmp_path / "latest_model.pth").read_bytes()

    def torn_save(obj, fh, *a, **kw):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        alg.save_model("latest_model.pth", str(tmp_path))
    assert (tmp_path / "latest_model.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["latest_model.pth"]


@pytest.mark.parametrize("setting, expected", [("false", False), ("true", True)])
def test_cpu_bf16_switch_sets_autocast_and_channels_last(tmp_path, setting, expected):
    """``cpu_bf16`` turns USB's amp_cm into CPU bf16 autocast; ``amp`` stays False (CUDA)."""
    alg = build_algorithm(tiny_args(tmp_path, gpu="cpu", cpu_bf16=setting))
    assert alg.cpu_bf16_ is expected and alg.use_amp is False
    lin = torch.nn.Linear(3, 2)
    with alg.amp_cm():
        out = lin(torch.randn(1, 3))
    assert out.dtype == (torch.bfloat16 if expected else torch.float32)
    conv = next(p for p in alg.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
