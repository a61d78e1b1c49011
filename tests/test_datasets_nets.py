import numpy as np
import pytest
import torch

from as3l_plugin import datasets, nets
from as3l_plugin.errors import DatasetError


def test_digits_split_fixed():
    ds = datasets.load_digits_dataset()
    assert ds.x_train.shape == (1437, 8, 8) and ds.x_test.shape == (360, 8, 8)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255
    assert ds.y_train.dtype == np.int64 and set(ds.y_train.tolist()) == set(range(10))
    assert ds.in_channels == 1 and ds.image_size == 8


def test_unknown_dataset_lists_known():
    with pytest.raises(DatasetError, match="known: digits, fashion_mnist"):
        datasets.load_dataset("mnist")


def test_fashion_missing_names_install_command(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install -y dataset-fashion-mnist"):
        datasets.load_fashion_mnist_dataset(tmp_path)


@pytest.mark.parametrize("size", [8, 28])
def test_cnn_usb_interface(size):
    m = nets.cnn4(num_classes=10)
    x = torch.randn(4, 1, size, size)
    out = m(x)
    assert out["logits"].shape == (4, 10) and out["feat"].shape == (4, m.num_features)
    assert m(x, only_feat=True).shape == (4, 128)
    assert m(out["feat"], only_fc=True).shape == (4, 10)


def test_cnn_pretrained_loads_encoder_not_classifier(tmp_path):
    src = nets.cnn4(num_classes=10)
    torch.save({"model": src.state_dict()}, tmp_path / "ck.pth")
    dst = nets.cnn4(num_classes=5, pretrained=True, pretrained_path=str(tmp_path / "ck.pth"))
    for k, v in src.state_dict().items():
        if not k.startswith("classifier"):
            assert torch.equal(v, dst.state_dict()[k]), k


@pytest.mark.parametrize("size,flip", [(8, False), (28, True)])
def test_fast_transforms_match_torchvision(size, flip):
    """weak/strong/eval: the same tensors, from the same random numbers, as the torchvision
    pipeline they replace (RandomCrop reflect, RandomHorizontalFlip, ToTensor, Normalize)."""
    import random

    from PIL import Image
    from torchvision import transforms as T

    from as3l_plugin.usb.datasets import GrayRandAugment, make_transforms
    mean, std = (0.3,), (0.2,)
    pad = max(1, int(size * (1 - 0.875)))
    base = [T.RandomCrop(size, padding=pad, padding_mode="reflect")]
    if flip:
        base.append(T.RandomHorizontalFlip())
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    ref = {"weak": T.Compose(base + tail), "strong": T.Compose(base + [GrayRandAugment()] + tail),
           "eval": T.Compose(tail)}
    fast = dict(zip(("weak", "strong", "eval"), make_transforms(size, mean, std, flip=flip)))
    rng = np.random.RandomState(0)
    imgs = [Image.fromarray(rng.randint(0, 256, (size, size), dtype=np.uint8), mode="L")
            for _ in range(40)]
    for name in ("weak", "strong", "eval"):
        outs = []
        for t in (ref[name], fast[name]):
            torch.manual_seed(1)
            random.seed(1)
            outs.append([t(im) for im in imgs])
        for a, b in zip(*outs):
            assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (1, size, size)
            assert torch.equal(a, b), name
        # the augmentations do move pixels: not the identity
        if name != "eval":
            assert any(not torch.equal(o, e) for o, e in zip(outs[1], [ref["eval"](im) for im in imgs]))
