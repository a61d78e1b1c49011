"""The plugin's datasets as USB datasets (``dataset: digits | fashion_mnist | folder | arrays``).

:func:`build_plugin_dataset` returns what USB's ``get_dataset`` returns —
``{'train_lb', 'train_ulb', 'eval', 'test': None}`` of USB ``BasicDataset`` — built from
:func:`as3l_plugin.datasets.load_dataset` (uint8 ``(n, H, W)`` or ``(n, H, W, 3)``). digits
and fashion_mnist keep their native size (the config's ``img_size`` is not used); ``folder``
reads ``data_dir`` (the image folder) with the config's ``img_size`` / ``channels`` /
``skip_bad_images`` (see :mod:`as3l_plugin.user_datasets`), ``arrays`` reads ``data_dir`` (the
``.npz``), whose images must be ``img_size`` already.

Labels
    The labeled samples take their labels from the dataset, or from ``lb_labels_file`` when
    set (the annotated ``to_annotate.csv`` of ``as3l select``, columns ``index,label``: an
    unlabeled folder's pool has no labels of its own). A labeled sample without a label is a
    :class:`~as3l_plugin.errors.ConfigError`; so is a ``folder`` without ``test/`` images
    (USB evaluates on them).

Split
    ``lb_index_file`` when set (checked by :func:`as3l_plugin.artifacts.load_lb_index`),
    else ``num_labels / num_classes`` random samples per class drawn with
    ``np.random.RandomState(seed)``. The unlabeled set is every other train sample in
    dataset order, preceded by the labeled ones when ``include_lb_to_ulb`` (USB's layout).
    ``fullysupervised`` trains on the whole train split unless ``lb_index_file`` is set.
    Every dataset carries ``orig_index`` (int64, the train-split row of each item) and
    ``orig_len``.

Augmentation (uint8 images, then ``ToTensor`` + ``Normalize(ds.mean, ds.std)`` values; see :func:`make_transforms`)
    weak: reflect-padded random crop (padding ``max(1, int(size * (1 - crop_ratio)))``:
    1 px for digits, 3 px for Fashion-MNIST at 0.875) and a horizontal flip (not for digits,
    which are not mirror-symmetric; ``folder`` / ``arrays`` flip unless ``flip: false``);
    strong: weak + :class:`GrayRandAugment` (2 random ops from a grayscale-safe list with
    random magnitudes, then a random cutout, like USB's RandAugment).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from ..errors import ConfigError

#: dataset name → horizontal flip in the weak augmentation (folder / arrays: the config's
#: ``flip``, default True)
PLUGIN_DATASETS = {"digits": False, "fashion_mnist": True, "folder": True, "arrays": True}


class GrayRandAugment:
    """RandAugment for small grayscale (or RGB) PIL images.

    Parameters
    ----------
    n : int, default 2
        Operations applied per image (each with a magnitude drawn uniformly in [0, 1]).
    cutout : float, default 0.5
        Maximal side of the final cutout square, as a fraction of the image side (a random
        fraction in [0, cutout) is used, as USB's RandAugment does).

    Operations: identity, autocontrast, equalize, rotate (±30°), solarize, posterize
    (8→4 bits), contrast / brightness / sharpness (×[0.1, 1.9]), shear x/y (±0.3),
    translate x/y (±30 % of the side). Uses Python's ``random`` (seeded by the run).
    """

    OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "posterize",
           "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
           "translate_y")

    def __init__(self, n: int = 2, cutout: float = 0.5):
        self.n = int(n)
        self.cutout = float(cutout)

    @staticmethod
    def _signed(m: float) -> float:
        return m if random.random() < 0.5 else -m

    def _apply(self, img: Image.Image, op: str, m: float) -> Image.Image:
        w, h = img.size
        if op == "identity":
            return img
        if op == "autocontrast":
            return TF.autocontrast(img)
        if op == "equalize":
            return TF.equalize(img)
        if op == "rotate":
            return TF.rotate(img, self._signed(30.0 * m))
        if op == "solarize":
            return TF.solarize(img, int(256 - 256 * m))
        if op == "posterize":
            return TF.posterize(img, int(8 - round(4 * m)))
        if op in ("contrast", "brightness", "sharpness"):
            factor = 1.0 + self._signed(0.9 * m)
            fn = {"contrast": TF.adjust_contrast, "brightness": TF.adjust_brightness,
                  "sharpness": TF.adjust_sharpness}[op]
            return fn(img, factor)
        if op in ("shear_x", "shear_y"):
            deg = float(np.degrees(np.arctan(self._signed(0.3 * m))))
            shear = [deg, 0.0] if op == "shear_x" else [0.0, deg]
            return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear)
        if op in ("translate_x", "translate_y"):
            t = int(round(self._signed(0.3 * m) * (w if op == "translate_x" else h)))
            tr = [t, 0] if op == "translate_x" else [0, t]
            return TF.affine(img, angle=0.0, translate=tr, scale=1.0, shear=[0.0, 0.0])
        raise ValueError(f"unknown op {op!r}")

    def _cutout(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        side = int(random.random() * self.cutout * min(w, h))
        if side < 1:
            return img
        x0, y0 = random.randint(0, w - 1), random.randint(0, h - 1)
        arr = np.array(img)
        arr[max(0, y0 - side // 2): y0 + (side + 1) // 2, max(0, x0 - side // 2): x0 + (side + 1) // 2] = 127
        return Image.fromarray(arr, mode=img.mode)

    def __call__(self, img: Image.Image) -> Image.Image:
        for op in random.choices(self.OPS, k=self.n):
            img = self._apply(img, op, random.random())
        return self._cutout(img)

    def __repr__(self):
        return f"{type(self).__name__}(n={self.n}, cutout={self.cutout})"


class PadCropFlip:
    """Reflect-pad, random crop back to ``size`` and (optionally) a random horizontal flip.

    The same random numbers, drawn from torch in the same order, and the same pixels as
    ``RandomCrop(size, padding=pad, padding_mode='reflect')`` followed by
    ``RandomHorizontalFlip()``, without PIL's round trips.

    Parameters
    ----------
    size : int
        Output side.
    pad : int
        Reflect padding on every side (>= 1).
    flip : bool, default False
        Flip left-right with probability 1/2.

    Input: a PIL 'L' image or a uint8 ``(H, W)`` array with ``H = W = size``. Output: a
    uint8 ``(size, size)`` array.
    """

    def __init__(self, size: int, pad: int, flip: bool = False):
        self.size, self.pad, self.flip = int(size), int(pad), bool(flip)
        # row/column of the source image behind each row/column of the padded one
        self._src = np.pad(np.arange(self.size), self.pad, mode="reflect")

    def __call__(self, img) -> np.ndarray:
        a = np.asarray(img)
        if a.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}x{self.size} image, got shape {a.shape}")
        span = self.size + 2 * self.pad
        i = int(torch.randint(0, span - self.size + 1, size=(1,)).item())
        j = int(torch.randint(0, span - self.size + 1, size=(1,)).item())
        cols = self._src[j:j + self.size]
        if self.flip and torch.rand(1) < 0.5:
            cols = cols[::-1]
        return a[self._src[i:i + self.size]][:, cols]

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, pad={self.pad}, flip={self.flip})"


class ToNormalizedTensor:
    """``ToTensor()`` then ``Normalize(mean, std)`` in one step (the same float32 values).

    Input: a PIL 'L' image or a uint8 ``(H, W)`` / ``(H, W, C)`` array. Output: float32
    ``(C, H, W)`` tensor, ``(x / 255 - mean) / std`` per channel.
    """

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img) -> torch.Tensor:
        a = np.array(img, dtype=np.uint8)  # a copy: the tensor owns its memory
        if a.ndim == 2:
            a = a[:, :, None]
        t = torch.from_numpy(a).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return t.sub_(self.mean).div_(self.std)

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def to_pil_gray(a) -> Image.Image:
    """uint8 ``(H, W)`` array → PIL 'L' image, ``(H, W, 3)`` → 'RGB' (what
    :class:`GrayRandAugment` works on)."""
    a = np.ascontiguousarray(a)
    return Image.fromarray(a, mode="L" if a.ndim == 2 else "RGB")


def make_transforms(image_size: int, mean, std, *, flip: bool, crop_ratio: float = 0.875):
    """Weak, strong and evaluation transforms for ``image_size`` images (grayscale or RGB).

    weak = pad-crop(-flip) → tensor; strong = pad-crop(-flip) → :class:`GrayRandAugment` →
    tensor; evaluation = tensor (tensor = ``ToTensor`` + ``Normalize(mean, std)``). They
    give the same tensors, from the same random numbers, as torchvision's
    ``RandomCrop(padding_mode='reflect')`` / ``RandomHorizontalFlip`` / ``ToTensor`` /
    ``Normalize`` (tested), at a fraction of the cost: data loading was a third of a
    digits training step.
    """
    pad = max(1, int(image_size * (1 - crop_ratio)))
    crop = PadCropFlip(image_size, pad, flip=flip)
    tensor = ToNormalizedTensor(mean, std)
    weak = transforms.Compose([crop, tensor])
    strong = transforms.Compose([crop, to_pil_gray, GrayRandAugment(), tensor])
    evaluation = transforms.Compose([tensor])
    return weak, strong, evaluation


def random_split(targets: np.ndarray, num_labels: int, num_classes: int, seed: int) -> np.ndarray:
    """``num_labels / num_classes`` random indices per class (sorted by class, then draw)."""
    if num_labels % num_classes:
        raise ConfigError(f"num_labels={num_labels} is not a multiple of num_classes="
                          f"{num_classes} (a balanced random split needs one; or give "
                          "lb_index_file)", field="num_labels")
    rng = np.random.RandomState(seed)
    per = num_labels // num_classes
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(targets == c)
        if idx.size < per:
            raise ConfigError(f"class {c} has {idx.size} samples, fewer than the {per} "
                              "labeled samples per class asked for", field="num_labels")
        out.append(rng.choice(idx, per, replace=False))
    return np.concatenate(out).astype(np.int64)


def _data_dir_for(name: str, data_dir):
    """``<data_dir>/<name>`` if it exists (USB's layout), else None (the loader's default);
    ``folder`` / ``arrays``: ``data_dir`` itself."""
    from ..datasets import USER_LOADERS
    if name in USER_LOADERS:
        return data_dir
    if data_dir:
        cand = os.path.join(str(data_dir), name)
        if os.path.isdir(cand):
            return cand
    return None


def load_plugin_dataset(args, name=None, data_dir=None):
    """The :class:`~as3l_plugin.datasets.ArrayDataset` of a USB config's plugin dataset
    (``args.dataset`` / ``args.data_dir`` unless given; the dataset options from ``args``)."""
    from ..datasets import USER_LOADERS, dataset_options, load_dataset
    name = name or getattr(args, "dataset", None)
    data_dir = data_dir if data_dir is not None else getattr(args, "data_dir", None)
    if name in USER_LOADERS:
        return load_dataset(name, data_dir, **dataset_options(args))
    return load_dataset(name, data_dir=_data_dir_for(name, data_dir))


def labeled_targets(args, ds, lb: np.ndarray) -> np.ndarray:
    """Labels of the labeled samples ``lb`` (int64, like ``lb``): ``lb_labels_file`` when set,
    else the dataset's; a missing label (-1) is a :class:`ConfigError`."""
    path = getattr(args, "lb_labels_file", None) or None
    if path:
        from ..annotations import read_labels_csv
        from ..datasets import class_names
        y = np.asarray(read_labels_csv(path, lb, ds.num_classes, n_samples=len(ds.y_train),
                                       class_names=class_names(ds),
                                       paths=getattr(ds, "paths", None)), dtype=np.int64)
    else:
        y = ds.y_train[lb]
    missing = np.flatnonzero(y < 0)
    if missing.size:
        raise ConfigError(f"{missing.size} of the {len(lb)} labeled samples have no label in "
                          f"the {ds.name} dataset (first: row {int(lb[missing[0]])}); set "
                          "lb_labels_file to the annotated to_annotate.csv",
                          field="lb_labels_file")
    return y


def build_plugin_dataset(args, algorithm, name, num_labels, num_classes, *, data_dir=None,
                         include_lb_to_ulb=True, lb_index_file=None) -> dict:
    """USB datasets for a plugin dataset (see the module docstring)."""
    from semilearn.datasets.cv_datasets.datasetbase import BasicDataset

    from ..datasets import USER_LOADERS
    from ..artifacts import load_lb_index
    ds = load_plugin_dataset(args, name, data_dir)
    if int(num_classes) != ds.num_classes:
        hint = (" (an unlabeled folder names its classes in classes.txt)"
                if name in USER_LOADERS else "")
        raise ConfigError(f"num_classes={num_classes} but {name} has {ds.num_classes} "
                          f"classes{hint}", field="num_classes")
    if name in USER_LOADERS and len(ds.y_test) == 0:
        raise ConfigError(f"{name} dataset {data_dir} has no test images; USB evaluates on "
                          "them (folder: PATH/test/<class>/...; arrays: x_test, y_test)",
                          field="data_dir")
    n = len(ds.y_train)
    if name in USER_LOADERS and int(num_labels) > n:
        from ..errors import DatasetError
        raise DatasetError(f"holds {n} training images, fewer than num_labels={num_labels}; "
                           "lower num_labels or add images", path=data_dir)
    supervised = algorithm in ("fullysupervised", "supervised")
    if lb_index_file:
        lb = load_lb_index(lb_index_file, n_samples=n, num_labels=num_labels)
    elif (ds.y_train < 0).any():
        raise ConfigError(f"the {name} pool has unlabeled samples, so USB cannot draw a random "
                          "labeled set; set lb_index_file (as3l select) and lb_labels_file "
                          "(the annotated to_annotate.csv)", field="lb_index_file")
    elif supervised:
        lb = np.arange(n, dtype=np.int64)
    else:
        lb = random_split(ds.y_train, int(num_labels), ds.num_classes, int(getattr(args, "seed", 0) or 0))
    targets = ds.y_train.copy()
    targets[lb] = labeled_targets(args, ds, lb)
    rest = np.setdiff1d(np.arange(n), lb)
    ulb = np.concatenate([lb, rest]) if include_lb_to_ulb else rest
    crop_ratio = float(getattr(args, "crop_ratio", 0.875) or 0.875)
    flip = PLUGIN_DATASETS[name]
    if name in USER_LOADERS and getattr(args, "flip", None) is not None:
        flip = bool(args.flip)
    weak, strong, evaluation = make_transforms(ds.image_size, ds.mean, ds.std,
                                               flip=flip, crop_ratio=crop_ratio)
    C = ds.num_classes
    lb_dset = BasicDataset(algorithm, ds.x_train[lb], targets[lb], C, weak, False, strong, False)
    ulb_dset = BasicDataset(algorithm, ds.x_train[ulb], targets[ulb], C, weak, True, strong, False)
    eval_dset = BasicDataset(algorithm, ds.x_test, ds.y_test, C, evaluation, False, None, False)
    lb_dset.orig_index, ulb_dset.orig_index = lb, ulb
    lb_dset.orig_len = ulb_dset.orig_len = n
    print(f"{name}: {len(lb)} labeled, {len(ulb)} unlabeled, {len(ds.y_test)} eval samples; "
          f"lb count: {np.bincount(targets[lb], minlength=C).tolist()}")
    return {"train_lb": lb_dset, "train_ulb": ulb_dset, "eval": eval_dset, "test": None}
