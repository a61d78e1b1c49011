"""The device contract of every torch stage: CUDA when asked, a one-line error when CUDA is
asked for and absent (never a silent CPU run), and USB's own GPU code paths left alone by the
plugin's CPU shims (shown with ``torch.cuda`` mocked: this machine has no GPU)."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("semilearn")

import as3l_plugin.usb  # noqa: E402,F401  (applies the shims)
from as3l_plugin.errors import ConfigError, ParameterError  # noqa: E402
from as3l_plugin.usb import compat  # noqa: E402
from as3l_plugin.usb.train import build_algorithm, get_config  # noqa: E402
from as3l_plugin.validate import check_device  # noqa: E402

TINY = Path(__file__).with_name("usb_tiny.yaml")
NO_CUDA = not torch.cuda.is_available()


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def fake_cuda(monkeypatch):
    """``torch.cuda`` says one GPU exists; ``Tensor.cuda(i)`` records ``i`` and stays on CPU
    (so USB's CUDA branches run here and we see which ones ran)."""
    calls = []

    def cuda(self, device=None, non_blocking=False, memory_format=torch.preserve_format):
        calls.append((type(self).__name__, device))
        return self

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.Tensor, "cuda", cuda)
    return calls


# --------------------------------------------------------------------------- check_device
def test_check_device_accepts_cpu_and_names_the_field(no_cuda):
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ParameterError, match=r"^device: device='cuda' asks for CUDA but "
                                             r"torch.cuda.is_available\(\) is False") as e:
        check_device("cuda")
    assert "\n" not in str(e.value) and e.value.field == "device"
    with pytest.raises(ConfigError, match=r"^cfg.yaml: dev: dev='cuda:1'"):
        check_device("cuda:1", "dev", error=ConfigError, path="cfg.yaml")
    with pytest.raises(ParameterError, match="not a torch device"):
        check_device("gpu0")


def test_check_device_cuda_index_past_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda") == torch.device("cuda")
    assert check_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ParameterError, match=r"1 CUDA device\(s\)"):
        check_device("cuda:1")


# --------------------------------------------------------------------------- feature stages
def _tiny_images(n=16):
    from as3l_plugin.datasets import ArrayDataset
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    y = np.arange(n) % 2
    return ArrayDataset("toy", x, y, x[:4], y[:4], 2, (0.5,), (0.25,))


def test_pretrain_cuda_without_cuda_fails_before_work(tmp_path, no_cuda):
    from as3l_plugin.features.pretrain import SimSiamPretrainer
    with pytest.raises(ParameterError, match=r"^device: device='cuda' asks for CUDA"):
        SimSiamPretrainer(epochs=1, batch_size=4, device="cuda").fit(_tiny_images(), tmp_path / "o")
    assert not (tmp_path / "o" / "checkpoint.pth").exists()
    with pytest.raises(ParameterError, match=r"^amp: amp=True needs a CUDA device"):
        SimSiamPretrainer(epochs=1, batch_size=4, amp=True).fit(_tiny_images(), tmp_path / "o")


def test_extract_and_finetune_cuda_without_cuda(tmp_path, no_cuda):
    from as3l_plugin.features.extract import extract_features
    from as3l_plugin.features.finetune import FeatureFinetuner
    with pytest.raises(ParameterError, match=r"^device: device='cuda' asks for CUDA"):
        extract_features(tmp_path / "backbone.pth", device="cuda")  # before the file is read
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(ParameterError, match=r"^device: device='cuda:0' asks for CUDA"):
        FeatureFinetuner(n_clusters=2, n_runs=1, epochs=1, device="cuda:0").fit(X)


def test_pipeline_config_device_checked_at_load(no_cuda):
    from as3l_plugin.pipeline import load_config
    with pytest.raises(ConfigError, match=r"^device: device='cuda' asks for CUDA"):
        load_config({"dataset": "digits", "num_labels": 10, "device": "cuda"})


@pytest.mark.parametrize("argv", [
    ["pretrain", "--dataset", "digits", "--out", "OUT", "--device", "cuda"],
    ["features", "--checkpoint", "OUT/backbone.pth", "--out", "OUT/f.npy", "--device", "cuda"],
])
def test_cli_device_cuda_without_cuda_is_one_line_exit_2(argv, tmp_path, capsys, no_cuda):
    from as3l_plugin.cli import main
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("as3l: error: device: device='cuda' asks for CUDA") and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_cli_train_gpu_0_without_cuda_is_one_line_exit_2(tmp_path, capsys, no_cuda):
    from as3l_plugin.cli import main
    assert main(["train", "--c", str(TINY), "--algorithm", "flexmatch", "--gpu", "0",
                 "--save_dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("as3l: error: gpu: gpu=0 asks for CUDA") and "\n" not in err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- USB on CUDA (mocked)
def _args(tmp_path, **kw):
    kw.setdefault("save_dir", str(tmp_path / "runs"))
    kw.setdefault("algorithm", "flexmatch")
    return get_config(TINY, shared=True, **kw)


def test_cuda_run_keeps_usb_hooks_amp_and_gpu(tmp_path, fake_cuda):
    """gpu: 0 + amp with CUDA: USB's TimerHook/ParamUpdateHook, USB's autocast and scaler, its
    gpu id and device count; no CPU speed-ups (channels-last, bf16)."""
    from semilearn.core.hooks import ParamUpdateHook, TimerHook
    alg = build_algorithm(_args(tmp_path, gpu=0, amp=True))
    assert alg.device == torch.device("cuda", 0) and alg.on_cuda
    assert alg.gpu == 0 and alg.ngpus_per_node == 1
    assert type(alg.hooks_dict["TimerHook"]) is TimerHook
    assert type(alg.hooks_dict["ParamUpdateHook"]) is ParamUpdateHook
    assert alg.use_amp is True and alg.loss_scaler.is_enabled()
    from torch.cuda.amp import autocast
    assert alg.amp_cm is autocast and not hasattr(alg, "cpu_bf16_")
    conv = next(p for p in alg.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)


def test_cuda_batches_evaluation_and_load_take_usbs_cuda_path(tmp_path, fake_cuda):
    """process_batch / evaluate / FlexMatch.load_model call ``.cuda(0)`` on plain tensors:
    no CpuTensor, no wrapped loader."""
    alg = build_algorithm(_args(tmp_path, gpu=0))
    data_lb = next(iter(alg.loader_dict["train_lb"]))
    data_ulb = next(iter(alg.loader_dict["train_ulb"]))
    batch = alg.process_batch(**data_lb, **data_ulb)
    assert fake_cuda and all(dev == 0 for _, dev in fake_cuda)
    assert all(type(v) is torch.Tensor for v in batch.values() if isinstance(v, torch.Tensor))
    assert "CpuTensor" not in {name for name, _ in fake_cuda}

    fake_cuda.clear()
    loader = alg.loader_dict["eval"]
    from semilearn.core.utils.misc import EMA  # evaluate() swaps in the EMA weights
    alg.ema = EMA(alg.model, alg.ema_m)
    alg.ema.register()
    alg.evaluate("eval")
    assert alg.loader_dict["eval"] is loader and fake_cuda
    assert "CpuTensor" not in {name for name, _ in fake_cuda}

    alg.epoch = 0
    alg.save_model("ck.pth", str(tmp_path))
    fake_cuda.clear()
    alg.load_model(str(tmp_path / "ck.pth"))
    assert ("Tensor", 0) in fake_cuda and "CpuTensor" not in {name for name, _ in fake_cuda}
    assert type(alg.hooks_dict["MaskingHook"].classwise_acc) is torch.Tensor


def test_cuda_send_model_is_usbs_send_model_cuda(tmp_path, monkeypatch, fake_cuda):
    import semilearn.core.utils as cu
    seen = []
    monkeypatch.setattr(cu, "send_model_cuda", lambda args, model, clip_batch=True:
                        seen.append(clip_batch) or "usb-wrapped")
    args = _args(tmp_path, gpu=0)
    model = torch.nn.Linear(2, 2)
    assert compat.send_model(args, model, torch.device("cuda", 0)) == "usb-wrapped"
    assert compat.send_model(args, model, torch.device("cuda", 0), clip_batch=False) == "usb-wrapped"
    assert seen == [True, False]


def test_cuda_ddp_keeps_nccl_and_one_process_per_gpu(tmp_path, monkeypatch, fake_cuda):
    """multiprocessing_distributed on CUDA: mp.spawn with device_count() processes on nccl
    (the CPU rules: gloo, in-process for one process, do not engage)."""
    import torch.multiprocessing as mp

    from as3l_plugin.usb.train import main
    spawned = []
    monkeypatch.setattr(mp, "spawn", lambda fn, nprocs, args: spawned.append((nprocs, args[0], args[1])))
    args = _args(tmp_path, gpu=None, multiprocessing_distributed=True, dist_backend="nccl")
    with pytest.raises(RuntimeError, match="without writing"):
        main(args)
    (nprocs, ngpus, a), = spawned
    assert nprocs == ngpus == 1 and a.dist_backend == "nccl" and a.world_size == 1
    assert a.multiprocessing_distributed and a.distributed


def test_cpu_ddp_rules_still_apply(tmp_path, monkeypatch, no_cuda):
    """The contrast: on CPU nccl becomes gloo, and one process trains without DDP."""
    import as3l_plugin.usb.train as T
    ran = []
    monkeypatch.setattr(T, "main_worker", lambda gpu, n, args, hooks=(): ran.append((gpu, n, args)))
    args = _args(tmp_path, gpu=None, multiprocessing_distributed=True, dist_backend="nccl")
    with pytest.warns(UserWarning, match="gloo"), pytest.raises(RuntimeError, match="without writing"):
        T.main(args)
    (gpu, n, a), = ran
    assert gpu is None and n == 1 and a.dist_backend == "gloo" and not a.distributed
