"""Your own images as a dataset: ``dataset: folder`` (an image folder) and ``dataset: arrays``
(an ``.npz`` of uint8 arrays). Registered in :data:`as3l_plugin.datasets.USER_LOADERS`; use
them through :func:`as3l_plugin.datasets.load_dataset`, which returns the same
:class:`~as3l_plugin.datasets.ArrayDataset` as the built-in loaders.

``folder`` layout (``data_dir`` = ``PATH``)
-------------------------------------------
::

    PATH/train/...          the pool: .png .jpg .jpeg .bmp .tif .tiff, any nesting, any size
    PATH/test/<class>/...   optional evaluation split (ImageFolder layout)
    PATH/classes.txt        optional: one class name per line; fixes class order and names

- **Row order** is the sorted relative path (``train/cat/0001.png`` ...; plain string sort of
  ``/``-separated paths): name files with zero-padded numbers for a stable order. Hidden
  files and folders (``.*``, e.g. the cache) are ignored.
- **Labels**: when *every* pool image sits inside a first-level subfolder of ``train/``
  (``train/<class>/...``, deeper nesting allowed), those folder names are the labels
  (simulation / evaluation only: nothing is trained on them unless selected); otherwise the
  pool is unlabeled (``y_train`` = -1). Classes: ``classes.txt`` when present (a train or
  test folder not in it is an error), else the sorted union of the train and test folder
  names; ``num_classes = len(classes)`` (0 for an unlabeled pool without classes.txt/test).
- **Size rule** (``img_size = S``): an image already ``S x S`` is used unchanged; otherwise
  its shorter side is scaled to ``S`` (Pillow bilinear, antialiased) and the centre ``S x S``
  is cropped (the aspect ratio is kept; the long side's margins are cut). Unset, ``S`` is the
  images' size when every image is the same ``S x S`` square (read from the headers once and
  remembered in the cache); otherwise ``img_size`` is required.
- **Channels**: ``channels=1`` converts every image to grayscale (Pillow ``L``), ``3`` to RGB
  (alpha dropped; 16-bit grayscale keeps its 8 high bits). Unset, they are detected from
  the image modes (``1``/``L``/``LA``/``I``/``I;16``/``F`` = 1 channel, anything else = 3); a
  folder mixing both is an error asking for ``channels``.
- **Cache**: the decoded arrays are written once (atomically, progress bar) to
  ``PATH/.as3l-cache/{split}_{S}px_{c}.npy`` with a JSON sidecar holding the file-list
  checksum (:func:`~as3l_plugin.io.sha256_file_list`), the files' sizes and mtimes, the
  skipped images and the train mean/std; any change to the folder re-decodes. A read-only
  ``PATH`` only loses the cache (a warning).
- ``ArrayDataset.paths`` / ``test_paths``: the rows' paths relative to ``PATH``;
  ``files_sha256``: the checksum of ``paths`` (recorded in feature, index and prior sidecars;
  an index or prior made before images were added, removed or renamed is refused).
- **Bad input** (:class:`~as3l_plugin.errors.DatasetError`, one line naming the file): no
  ``train/`` or no images in it, an unreadable or corrupt image (``skip_bad_images=True``
  lists them on stderr and leaves them out instead), mixed channel counts without
  ``channels``, a class folder unknown to ``classes.txt``, ``img_size`` missing.

``arrays`` layout (``data_dir`` = ``FILE.npz``)
-----------------------------------------------
``x_train`` uint8 ``(n, S, S)`` or ``(n, S, S, C)`` with ``C`` in 1 (squeezed) or 3; optional
``y_train`` int ``(n,)`` (-1 = unlabeled), ``x_test`` / ``y_test`` (both or neither, same image
shape), ``classes`` (str ``(C,)``; default ``"0" .. str(max label)``). Images are used as they
are: a given ``img_size`` / ``channels`` must match them.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .array_dataset import ArrayDataset
from .errors import ConfigError, DatasetError, OutputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
CACHE_DIR = ".as3l-cache"
CLASSES_FILE = "classes.txt"
CACHE_FORMAT = 1
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SKIP_HINT = "fix or remove it, or pass --skip-bad-images (skip_bad_images: true) to skip it"


# --------------------------------------------------------------------------- listing
def list_images(root: Path) -> List[Tuple[str, int, int]]:
    """``(relative path, size, mtime_ns)`` of every image under ``root``, sorted by path.

    Paths are ``/``-separated and relative to ``root``; hidden files and folders are skipped.
    """
    out = []
    stack = [(Path(root), "")]
    while stack:
        d, prefix = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    stack.append((Path(e.path), prefix + e.name + "/"))
                elif e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file():
                    st = e.stat()
                    out.append((prefix + e.name, int(st.st_size), int(st.st_mtime_ns)))
    out.sort(key=lambda t: t[0])
    return out


def read_classes_file(path: Path) -> Tuple[str, ...]:
    """Class names, one per line (blank lines ignored); duplicates are an error."""
    try:
        names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read ({exc})", path=path) from exc
    names = [n for n in names if n]
    if not names:
        raise DatasetError("holds no class names (one per line)", path=path)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"lists class(es) {dup} twice", path=path)
    return tuple(names)


# --------------------------------------------------------------------------- decoding
def _open(path: Path):
    """Open an image (header only); errors become one-line :class:`DatasetError`."""
    from PIL import Image, UnidentifiedImageError
    try:
        return Image.open(path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DatasetError(f"unreadable image ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}); {SKIP_HINT}", path=path) from exc


def _channels_of(mode: str) -> int:
    return 1 if mode in GRAY_MODES else 3


def _to_channels(im, channels: int):
    from PIL import Image
    if im.mode.startswith("I;16"):
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
    elif im.mode in ("I", "F"):
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), mode="L")
    target = "L" if channels == 1 else "RGB"
    return im if im.mode == target else im.convert(target)


def resize_square(im, size: int):
    """The size rule: unchanged when already ``size x size``, else the shorter side scaled to
    ``size`` (bilinear, antialiased) and the centre ``size x size`` cropped."""
    from PIL import Image
    w, h = im.size
    if (w, h) == (size, size):
        return im
    s = size / min(w, h)
    nw, nh = max(size, int(round(w * s))), max(size, int(round(h * s)))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image → uint8 ``(size, size)`` (channels 1) or ``(size, size, 3)``."""
    from PIL import Image
    im = _open(path)
    try:
        with im:
            im.load()
            a = np.asarray(resize_square(_to_channels(im, channels), size), dtype=np.uint8)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # truncated / corrupt pixel data
        raise DatasetError(f"corrupt image ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())}); {SKIP_HINT}", path=path) from exc
    return a


# --------------------------------------------------------------------------- helpers
def channel_stats(x: np.ndarray, chunk: int = 4096) -> Tuple[tuple, tuple]:
    """Per-channel mean / std of ``x / 255`` (uint8 ``(n, H, W[, C])``), rounded to 4
    decimals like the built-in loaders, in row blocks (no float copy of the whole array)."""
    c = 1 if x.ndim == 3 else x.shape[-1]
    s = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    for i in range(0, len(x), chunk):
        b = x[i:i + chunk].reshape(-1, c).astype(np.float64)
        s += b.sum(0)
        s2 += (b * b).sum(0)
    m = max(1, x.size // c)
    mean = s / m / 255.0
    std = np.sqrt(np.maximum(s2 / m / 255.0 ** 2 - mean ** 2, 0.0))
    return tuple(float(round(v, 4)) for v in mean), tuple(float(round(v, 4)) for v in std)


def _common_size(root: Path, *splits: "_Split") -> int:
    """The side shared by every image of ``splits`` when all are the same square, else the
    ``img_size is required`` error. Remembered in ``CACHE_DIR/size.json`` by the files' stats."""
    import json

    from .io import atomic_write_json, sha256_file_list
    stats = [t for sp in splits for t in sp.stat]
    key = sha256_file_list(f"{p}\t{s}\t{t}" for p, s, t in stats)
    memo = root / CACHE_DIR / "size.json"
    size = -1
    try:
        got = json.loads(memo.read_text())
        if got.get("files") == key:
            size = got["size"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if size != -1:
        return _size_or_required(size, root)
    sizes = set()
    for rel, _, _ in stats:
        with _open(root / rel) as im:
            sizes.add(tuple(im.size))
        if len(sizes) > 1:
            break
    size = next(iter(sizes))[0] if len(sizes) == 1 and len(set(next(iter(sizes)))) == 1 \
        else None
    try:
        memo.parent.mkdir(exist_ok=True)
        atomic_write_json(memo, {"files": key, "size": size})
    except OSError:
        pass
    return _size_or_required(size, root)


def _size_or_required(size, root: Path) -> int:
    if size is None:
        raise ConfigError("is required for dataset folder: the images are not all one square "
                          "size, so give the side they are resized to (e.g. img_size: 32, or "
                          "--img-size 32)", path=root, field="img_size")
    return check_img_size(int(size))


def check_img_size(img_size, *, where=None) -> int:
    if img_size is None:
        raise ConfigError("is required for dataset folder: the side the images are resized to "
                          "(e.g. img_size: 32, or --img-size 32)", path=where, field="img_size")
    if isinstance(img_size, bool) or not isinstance(img_size, (int, np.integer)) or img_size < 4:
        raise ConfigError(f"={img_size!r} must be an integer >= 4", path=where, field="img_size")
    return int(img_size)


def check_channels(channels, *, where=None) -> Optional[int]:
    if channels is None:
        return None
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ConfigError(f"={channels!r}; allowed: 1 (grayscale), 3 (RGB) or unset (detected)",
                          path=where, field="channels")
    return int(channels)


def _warn(msg: str):
    print(f"as3l: warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- folder
class _Split:
    """The images of one split: relative paths (to the dataset root), sizes, mtimes."""

    def __init__(self, root: Path, sub: str):
        self.dir = root / sub
        files = list_images(self.dir) if self.dir.is_dir() else []
        self.rel = [f"{sub}/{p}" for p, _, _ in files]
        self.stat = [(f"{sub}/{p}", s, t) for p, s, t in files]


def _cache_paths(root: Path, split: str, size: int, channels: Optional[int]) -> Path:
    c = "auto" if channels is None else f"c{channels}"
    return root / CACHE_DIR / f"{split}_{size}px_{c}.npy"


def _decode_split(root: Path, split: _Split, size: int, channels: int, *, skip_bad: bool,
                  progress: bool, skipped: Sequence[str] = ()):
    """Decode every image of ``split`` (but those in ``skipped``) → (x, kept paths, bad)."""
    from tqdm.auto import tqdm
    keep, bad = [], []
    shape = (size, size) if channels == 1 else (size, size, 3)
    x = np.empty((len(split.rel),) + shape, dtype=np.uint8)
    skip = set(skipped)
    for rel in tqdm(split.rel, desc=f"decoding {split.dir}", unit="img", leave=False,
                    disable=None if progress else True, mininterval=0.5):
        if rel in skip:
            continue
        try:
            x[len(keep)] = decode_image(root / rel, size, channels)
        except DatasetError as exc:
            if not skip_bad:
                raise
            bad.append((rel, exc.message.split(";")[0]))
            continue
        keep.append(rel)
    return x[:len(keep)], keep, bad


def _detect_channels(root: Path, rels: Sequence[str], *, skip_bad: bool):
    """Channel count from the image modes (headers only) → (channels, unreadable paths)."""
    first = {}
    bad = []
    for rel in rels:
        try:
            with _open(root / rel) as im:
                c = _channels_of(im.mode)
        except DatasetError as exc:
            if not skip_bad:
                raise
            bad.append((rel, exc.message.split(";")[0]))
            continue
        first.setdefault(c, rel)
        if len(first) == 2:
            raise DatasetError(
                f"mixes grayscale ({first[1]}) and colour ({first[3]}) images; set channels: 1 "
                "or 3 (--channels) to convert them all", path=root / rel)
    return (next(iter(first)) if first else 1), bad


def _load_split_cached(root: Path, name: str, split: _Split, size: int,
                       channels: Optional[int], *, skip_bad: bool, progress: bool,
                       detected: Optional[int] = None):
    """x, kept paths, skipped [(path, why)], channels, cache meta — from the cache when its
    sidecar matches the folder, else decoded and cached."""
    from . import io
    cache = _cache_paths(root, name, size, channels)
    all_sha = io.sha256_file_list(split.rel)
    stat_sha = io.sha256_file_list(f"{p}\t{s}\t{t}" for p, s, t in split.stat)
    side = None
    if cache.is_file():
        try:
            side = io.read_sidecar(cache, required=False)
        except Exception:  # noqa: BLE001 - a broken cache sidecar just means re-decode
            side = None
    if side and side.get("format") == CACHE_FORMAT and side.get("all_files_sha256") == all_sha \
            and side.get("stat_sha256") == stat_sha and side.get("img_size") == size:
        skipped = [tuple(b) for b in side.get("skipped", [])]
        if skipped and not skip_bad:
            rel, why = skipped[0]
            raise DatasetError(f"{why}; {SKIP_HINT}", path=root / rel)
        try:
            x = io.load_npy(cache, what="image cache")
        except Exception:  # noqa: BLE001 - unreadable cache: decode again
            x = None
        if x is not None and x.dtype == np.uint8 and len(x) == side.get("n"):
            gone = {r for r, _ in skipped}
            kept = [p for p in split.rel if p not in gone]
            if io.sha256_file_list(kept) == side.get("files_sha256"):
                return x, kept, skipped, int(side["channels"]), side
    c = channels
    bad_hdr = []
    if c is None:
        c, bad_hdr = (detected, []) if detected is not None else \
            _detect_channels(root, split.rel, skip_bad=skip_bad)
    x, kept, bad = _decode_split(root, split, size, c, skip_bad=skip_bad, progress=progress,
                                 skipped=[r for r, _ in bad_hdr])
    bad = sorted(bad_hdr + bad)
    meta = {"kind": "as3l-image-cache", "format": CACHE_FORMAT, "split": name, "img_size": size,
            "channels": int(c), "channels_setting": channels, "n": int(len(kept)),
            "all_files_sha256": all_sha, "stat_sha256": stat_sha,
            "files_sha256": io.sha256_file_list(kept), "skipped": [list(b) for b in bad]}
    if name == "train" and len(kept):
        meta["mean"], meta["std"] = channel_stats(x)
    try:
        (root / CACHE_DIR).mkdir(exist_ok=True)
        io.write_with_sidecar(cache, x, meta)
    except (OSError, OutputError) as exc:
        _warn(f"cannot write the image cache in {root / CACHE_DIR} ({exc}); the images will "
              "be decoded again next time")
    return x, kept, bad, int(c), meta


def _labels_of(paths: Sequence[str]) -> Optional[List[str]]:
    """First-level folder under the split of each path, or None when any image is not in one."""
    out = []
    for p in paths:
        parts = p.split("/")
        if len(parts) < 3:
            return None
        out.append(parts[1])
    return out


def load_folder_dataset(data_dir=None, *, img_size=None, channels=None,
                        skip_bad_images: bool = False, progress: bool = True):
    """An image folder (see the module docstring) → :class:`~as3l_plugin.datasets.ArrayDataset`.

    Returns ``x_train`` uint8 ``(n, S, S)`` or ``(n, S, S, 3)`` in sorted-path order,
    ``y_train`` int64 ``(n,)`` (-1 when unlabeled), ``x_test`` / ``y_test`` (``(0, ...)`` when
    there is no ``test/``), ``classes``, ``paths``, ``test_paths``, ``files_sha256``.
    """
    from . import io
    if data_dir is None:
        raise ConfigError("is required for dataset folder (the folder holding train/)",
                          field="data_dir")
    channels = check_channels(channels)
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError("image folder not found (expected PATH/train/<images>)", path=root)
    train = _Split(root, "train")
    if not train.dir.is_dir():
        raise DatasetError("has no train/ folder (expected PATH/train/<images>, optionally "
                           "PATH/test/<class>/<images> and PATH/classes.txt)", path=root)
    if not train.rel:
        raise DatasetError(f"holds no images ({', '.join(IMAGE_SUFFIXES)})", path=train.dir)
    test = _Split(root, "test")
    if test.dir.is_dir() and not test.rel:
        raise DatasetError(f"holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it or put "
                           "the evaluation images in test/<class>/", path=test.dir)
    classes_file = root / CLASSES_FILE
    fixed = read_classes_file(classes_file) if classes_file.is_file() else None
    size = check_img_size(img_size) if img_size is not None else _common_size(root, train, test)
    test_labels = _labels_of(test.rel)
    if test.rel and test_labels is None:
        odd = next(p for p in test.rel if len(p.split("/")) < 3)
        raise DatasetError("test images must sit in class folders (test/<class>/...)",
                           path=root / odd)

    xtr, kept, bad, c, side = _load_split_cached(root, "train", train, size, channels,
                                                 skip_bad=skip_bad_images, progress=progress)
    if not kept:
        raise DatasetError("no readable images (all were skipped)", path=train.dir)
    xte, kept_te, bad_te = np.empty((0,) + xtr.shape[1:], np.uint8), [], []
    if test.rel:
        xte, kept_te, bad_te, _, _ = _load_split_cached(
            root, "test", test, size, channels, skip_bad=skip_bad_images, progress=progress)
        if xte.shape[1:] != xtr.shape[1:]:
            raise DatasetError(f"test images have {1 if xte.ndim == 3 else 3} channel(s), train "
                               f"images {c}; set channels: 1 or 3 (--channels)",
                               path=test.dir)
    for rel, why in bad + bad_te:
        _warn(f"skipped {root / rel}: {why}")

    tr_names = _labels_of(kept)
    te_names = _labels_of(kept_te) or []
    if fixed is not None:
        classes = fixed
        for split_names, split_paths in ((tr_names or [], kept), (te_names, kept_te)):
            unknown = sorted(set(split_names) - set(classes))
            if unknown:
                where = next(p for p, n in zip(split_paths, split_names) if n == unknown[0])
                raise DatasetError(f"class folder {unknown[0]!r} is not in {classes_file} "
                                   f"(classes: {', '.join(classes)}); add it there or rename "
                                   "the folder", path=root / where)
    else:
        classes = tuple(sorted(set(tr_names or []) | set(te_names)))
    index = {n: i for i, n in enumerate(classes)}
    ytr = (np.array([index[n] for n in tr_names], np.int64) if tr_names is not None
           else np.full(len(kept), -1, np.int64))
    yte = np.array([index[n] for n in te_names], np.int64)
    mean, std = (tuple(side["mean"]), tuple(side["std"])) if "mean" in side else channel_stats(xtr)
    return ArrayDataset("folder", xtr, ytr, xte, yte, len(classes), mean, std,
                        classes=classes, paths=tuple(kept), test_paths=tuple(kept_te),
                        files_sha256=io.sha256_file_list(kept))


def dataset_fingerprint(name: str, data_dir) -> Optional[str]:
    """A cheap identity of a ``folder`` / ``arrays`` dataset's files (no decoding), for cache
    keys of pipeline stages: :func:`~as3l_plugin.io.sha256_file_list` of every image's path,
    size and mtime (folder), or of the file's path, size and mtime (arrays). None when the
    data is missing (the loader then reports it)."""
    from . import io
    root = Path(data_dir) if data_dir is not None else None
    if root is None or not root.exists():
        return None
    if name == "arrays":
        st = root.stat()
        return io.sha256_file_list([f"{root.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"])
    rows = []
    for sub in ("train", "test"):
        if (root / sub).is_dir():
            rows += [f"{sub}/{p}\t{s}\t{t}" for p, s, t in list_images(root / sub)]
    for extra in (CLASSES_FILE,):
        if (root / extra).is_file():
            st = (root / extra).stat()
            rows.append(f"{extra}\t{st.st_size}\t{st.st_mtime_ns}")
    return io.sha256_file_list(rows)


# --------------------------------------------------------------------------- arrays
def load_arrays_dataset(data_dir=None, *, img_size=None, channels=None,
                        skip_bad_images: bool = False, progress: bool = True):
    """An ``.npz`` of uint8 images (see the module docstring) → ``ArrayDataset``.

    ``x_train`` uint8 ``(n, S, S)`` / ``(n, S, S, 3)``; ``y_train`` int64 ``(n,)`` (-1 where
    unlabeled or when absent); ``x_test`` / ``y_test`` (empty when absent); ``classes``.
    """
    if data_dir is None:
        raise ConfigError("is required for dataset arrays (the .npz file)", field="data_dir")
    path = Path(data_dir)
    if not path.is_file():
        raise DatasetError("arrays file not found (expected an .npz with x_train[, y_train, "
                           "x_test, y_test, classes])", path=path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"not a readable .npz file ({' '.join(str(exc).split())})",
                           path=path) from exc
    known = {"x_train", "y_train", "x_test", "y_test", "classes"}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise DatasetError(f"unknown array(s) {unknown}; allowed: {sorted(known)}", path=path)
    if "x_train" not in arrays:
        raise DatasetError("has no x_train array", path=path, field="x_train")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError("give both x_test and y_test, or neither", path=path, field="x_test")

    def images(key):
        x = arrays[key]
        if x.dtype != np.uint8:
            raise DatasetError(f"expected uint8 images, got {x.dtype}", path=path, field=key)
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3) or x.shape[1] != x.shape[2]:
            raise DatasetError(f"expected (n, S, S) or (n, S, S, 3) square images, got shape "
                               f"{x.shape}", path=path, field=key)
        return np.ascontiguousarray(x)

    def labels(key, n):
        y = arrays[key]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != n:
            raise DatasetError(f"expected {n} integer labels (shape ({n},)), got {y.dtype} "
                               f"{y.shape}", path=path, field=key)
        if y.size and y.min() < -1:
            raise DatasetError(f"has label {int(y.min())}; labels are class ids >= 0, or -1 "
                               "for unlabeled", path=path, field=key)
        return y.astype(np.int64)

    xtr = images("x_train")
    if len(xtr) == 0:
        raise DatasetError("x_train holds no images", path=path, field="x_train")
    ytr = labels("y_train", len(xtr)) if "y_train" in arrays else np.full(len(xtr), -1, np.int64)
    if "x_test" in arrays:
        xte = images("x_test")
        if xte.shape[1:] != xtr.shape[1:]:
            raise DatasetError(f"image shape {xte.shape[1:]} differs from x_train's "
                               f"{xtr.shape[1:]}", path=path, field="x_test")
        yte = labels("y_test", len(xte))
    else:
        xte, yte = np.empty((0,) + xtr.shape[1:], np.uint8), np.empty(0, np.int64)
    top = int(max(ytr.max(initial=-1), yte.max(initial=-1)))
    if "classes" in arrays:
        cl = arrays["classes"]
        if cl.ndim != 1 or cl.dtype.kind not in "US":
            raise DatasetError(f"expected a 1-D array of class names, got {cl.dtype} {cl.shape}",
                               path=path, field="classes")
        classes = tuple(str(v) for v in cl.tolist())
        if top >= len(classes):
            raise DatasetError(f"label {top} but only {len(classes)} classes", path=path,
                               field="classes")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    size = int(xtr.shape[1])
    if img_size is not None and check_img_size(img_size) != size:
        raise ConfigError(f"={img_size} but {path} holds {size}x{size} images (arrays are used "
                          f"as they are); set img_size: {size}", field="img_size")
    c = 1 if xtr.ndim == 3 else 3
    if check_channels(channels) not in (None, c):
        raise ConfigError(f"={channels} but {path} holds {c}-channel images", field="channels")
    mean, std = channel_stats(xtr)
    return ArrayDataset("arrays", xtr, ytr, xte, yte, len(classes), mean, std, classes=classes)


# --------------------------------------------------------------------------- export
def export_folder(ds, out, *, n: Optional[int] = None, n_test: Optional[int] = None,
                  progress: bool = True) -> dict:
    """Write ``ds`` (an ``ArrayDataset``) as PNGs in the class-subfolder layout.

    ``out/train/<class>/<row:06d>.png`` (the first ``n`` train rows, all when None),
    ``out/test/<class>/<row:06d>.png`` (the first ``n_test`` test rows; default: as many as
    ``n`` allows, all when ``n`` is None) and ``out/classes.txt``. Zero-padded row numbers make
    the sorted path order the dataset order within each class. Class names are ``ds.classes``
    (``/`` replaced by ``_``) or the class ids. Refuses a non-empty ``out``.

    Returns ``{"train": rows written, "test": rows written, "classes": names}``.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    from .errors import OutputError as _OutputError
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise _OutputError("exists and is not an empty directory; choose a new DIR", path=out)
    if not out.parent.is_dir():
        raise _OutputError("parent directory does not exist; create it first", path=out.parent)
    names = [c.replace("/", "_") for c in (ds.classes or [str(i) for i in range(ds.num_classes)])]
    if len(set(names)) != len(names) or any(not c or c.startswith(".") for c in names):
        raise _OutputError(f"class names {names} cannot be folder names", path=out)
    n_tr = len(ds.y_train) if n is None else min(int(n), len(ds.y_train))
    n_te = len(ds.y_test) if n_test is None and n is None else \
        min(len(ds.y_test), int(n_test) if n_test is not None else int(n))
    if (ds.y_train[:n_tr] < 0).any() or (ds.y_test[:n_te] < 0).any():
        raise _OutputError("the dataset has unlabeled rows; the class-folder layout needs "
                           "labels", path=out)
    # everything goes to a hidden sibling first, renamed to OUT at the end: a failed or
    # interrupted export leaves no half-written OUT
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for split, x, y, m in (("train", ds.x_train, ds.y_train, n_tr),
                               ("test", ds.x_test, ds.y_test, n_te)):
            for c in (names if m else ()):
                (tmp / split / c).mkdir(parents=True)
            for i in tqdm(range(m), desc=f"export {split}", unit="img", leave=False,
                          disable=None if progress else True):
                img = np.ascontiguousarray(x[i])
                Image.fromarray(img, mode="L" if img.ndim == 2 else "RGB").save(
                    tmp / split / names[int(y[i])] / f"{i:06d}.png", format="PNG")
        (tmp / CLASSES_FILE).write_text("\n".join(names) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _OutputError(f"export failed ({exc.strerror or exc}); nothing was written",
                               path=out) from exc
        raise
    return {"train": n_tr, "test": n_te, "classes": names}
