"""`dataset: folder` / `dataset: arrays`: layout, size rule, channels, cache, errors, export."""

import os

import numpy as np
import pytest
from PIL import Image

from as3l_plugin import user_datasets as ud
from as3l_plugin.datasets import ArrayDataset, load_dataset
from as3l_plugin.errors import ConfigError, DatasetError, OutputError
from as3l_plugin.io import sha256_file_list


def save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8), mode=mode).save(path)


def gray(v, h=8, w=8):
    return np.full((h, w), v, np.uint8)


def labeled_folder(root, *, test=True, classes_txt=None):
    """train/{cat,dog}/ 3 + 2 images, test/{cat,dog}/ 1 + 1, 8x8 grayscale PNG."""
    for i in range(3):
        save(root / "train" / "cat" / f"{i:03d}.png", gray(10 + i))
    for i in range(2):
        save(root / "train" / "dog" / f"{i:03d}.png", gray(100 + i))
    if test:
        save(root / "test" / "cat" / "000.png", gray(20))
        save(root / "test" / "dog" / "000.png", gray(120))
    if classes_txt is not None:
        (root / "classes.txt").write_text("\n".join(classes_txt) + "\n")
    return root


def load(root, **kw):
    kw.setdefault("img_size", 8)
    return load_dataset("folder", root, progress=False, **kw)


# --------------------------------------------------------------------------- folder: layout
def test_labeled_folder_rows_labels_classes(tmp_path):
    ds = load(labeled_folder(tmp_path))
    assert isinstance(ds, ArrayDataset) and ds.name == "folder"
    assert ds.x_train.shape == (5, 8, 8) and ds.x_train.dtype == np.uint8
    assert ds.classes == ("cat", "dog") and ds.num_classes == 2
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1] and ds.y_train.dtype == np.int64
    assert ds.x_train[:, 0, 0].tolist() == [10, 11, 12, 100, 101]
    assert ds.paths == ("train/cat/000.png", "train/cat/001.png", "train/cat/002.png",
                        "train/dog/000.png", "train/dog/001.png")
    assert ds.files_sha256 == sha256_file_list(ds.paths)
    assert ds.y_test.tolist() == [0, 1] and ds.x_test[:, 0, 0].tolist() == [20, 120]
    assert ds.test_paths == ("test/cat/000.png", "test/dog/000.png")
    assert ds.in_channels == 1 and ds.image_size == 8


def test_classes_txt_fixes_order(tmp_path):
    ds = load(labeled_folder(tmp_path, classes_txt=["dog", "cat", "bird"]))
    assert ds.classes == ("dog", "cat", "bird") and ds.num_classes == 3
    assert ds.y_train.tolist() == [1, 1, 1, 0, 0] and ds.y_test.tolist() == [1, 0]


def test_test_class_unknown_to_classes_txt(tmp_path):
    root = labeled_folder(tmp_path, classes_txt=["cat", "dog"])
    save(root / "test" / "fox" / "000.png", gray(1))
    with pytest.raises(DatasetError, match="'fox' is not in") as e:
        load(root)
    assert "test/fox/000.png" in str(e.value) and "\n" not in str(e.value)


def test_unlabeled_nested_pool_any_size_rgb(tmp_path):
    rng = np.random.default_rng(0)
    save(tmp_path / "train" / "a.png", rng.integers(0, 255, (20, 10, 3)))   # portrait
    save(tmp_path / "train" / "b" / "c" / "d.jpg", rng.integers(0, 255, (6, 12, 3)))
    save(tmp_path / "train" / "e.bmp", rng.integers(0, 255, (8, 8, 3)))
    ds = load(tmp_path)
    assert ds.x_train.shape == (3, 8, 8, 3) and ds.in_channels == 3
    assert ds.y_train.tolist() == [-1, -1, -1] and ds.num_classes == 0
    assert ds.paths == ("train/a.png", "train/b/c/d.jpg", "train/e.bmp")
    assert ds.x_test.shape == (0, 8, 8, 3) and ds.y_test.shape == (0,)
    # the size rule: shorter side to 8 (10x20 -> 8x16), centre crop rows 4..12
    with Image.open(tmp_path / "train" / "a.png") as im:
        want = np.asarray(im.convert("RGB").resize((8, 16), Image.BILINEAR))[4:12]
    np.testing.assert_array_equal(ds.x_train[0], want)
    # an image already img_size x img_size is used unchanged
    with Image.open(tmp_path / "train" / "e.bmp") as im:
        np.testing.assert_array_equal(ds.x_train[2], np.asarray(im))


def test_channels_mixed_needs_setting(tmp_path):
    save(tmp_path / "train" / "a.png", gray(5))
    save(tmp_path / "train" / "b.png", np.zeros((8, 8, 3)), mode="RGB")
    with pytest.raises(DatasetError, match="mixes grayscale .*channels"):
        load(tmp_path)
    ds = load(tmp_path, channels=3)
    assert ds.x_train.shape == (2, 8, 8, 3) and ds.x_train[0, 0, 0].tolist() == [5, 5, 5]
    ds = load(tmp_path, channels=1)
    assert ds.x_train.shape == (2, 8, 8)
    with pytest.raises(ConfigError, match="channels"):
        load(tmp_path, channels=2)


def test_img_size_required_and_checked(tmp_path):
    labeled_folder(tmp_path)  # every image 8 x 8: the size is read from the images
    ds = load_dataset("folder", tmp_path, progress=False)
    assert ds.x_train.shape == (5, 8, 8)
    np.testing.assert_array_equal(ds.x_train, load(tmp_path, img_size=8).x_train)
    assert load_dataset("folder", tmp_path, progress=False).x_train.shape == (5, 8, 8)  # memo
    with pytest.raises(ConfigError, match="img_size"):
        load(tmp_path, img_size=2)
    assert load(tmp_path, img_size=4).x_train.shape == (5, 4, 4)
    save(tmp_path / "train" / "dog" / "big.png", gray(50, 12, 10))  # one image of another size
    for _ in range(2):  # measured, then remembered
        with pytest.raises(ConfigError, match="img_size: is required .* not all one square"):
            load_dataset("folder", tmp_path, progress=False)
    assert load(tmp_path, img_size=8).x_train.shape == (6, 8, 8)


@pytest.mark.parametrize("make, match", [
    (lambda r: r.mkdir(), "has no train/"),
    (lambda r: (r / "train").mkdir(parents=True), "holds no images"),
    (lambda r: (save(r / "train" / "a.png", gray(1)), (r / "test").mkdir()), "holds no images"),
    (lambda r: (save(r / "train" / "a.png", gray(1)), save(r / "test" / "b.png", gray(1))),
     "class folders"),
])
def test_layout_errors(tmp_path, make, match):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(DatasetError, match=match):
        load(root)


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not found") as e:
        load(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)


@pytest.mark.parametrize("content", [b"not an image", None])
def test_bad_image_named_or_skipped(tmp_path, capsys, content):
    root = labeled_folder(tmp_path)
    bad = root / "train" / "cat" / "001.png"
    if content is None:  # truncated PNG: the header reads, the pixels do not
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(content)
    with pytest.raises(DatasetError, match="skip-bad-images") as e:
        load(root)
    assert str(e.value).startswith(str(bad)) and "\n" not in str(e.value)
    assert not (root / ud.CACHE_DIR / "train_8px_auto.npy").exists()  # nothing half-written
    ds = load(root, skip_bad_images=True)
    assert len(ds.y_train) == 4 and "train/cat/001.png" not in ds.paths
    assert f"skipped {bad}" in capsys.readouterr().err
    # the cache remembers the skipped image: without the option it is refused again
    with pytest.raises(DatasetError, match="skip-bad-images"):
        load(root)


def test_classes_txt_errors(tmp_path):
    root = labeled_folder(tmp_path, classes_txt=["cat", "cat", "dog"])
    with pytest.raises(DatasetError, match="twice") as e:
        load(root)
    assert "classes.txt" in str(e.value)
    (root / "classes.txt").write_text("cat\n")
    with pytest.raises(DatasetError, match="'dog' is not in"):
        load(root)


# --------------------------------------------------------------------------- folder: cache
def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    root = labeled_folder(tmp_path)
    first = load(root)
    assert (root / ud.CACHE_DIR / "train_8px_auto.npy.json").is_file()

    def no_decode(*a, **k):
        raise AssertionError("decoded although cached")
    monkeypatch.setattr(ud, "decode_image", no_decode)
    again = load(root)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    assert again.mean == first.mean and again.files_sha256 == first.files_sha256
    monkeypatch.undo()
    # adding, renaming or rewriting an image re-decodes
    save(root / "train" / "dog" / "002.png", gray(200))
    added = load(root)
    assert len(added.y_train) == 6 and added.files_sha256 != first.files_sha256
    os.rename(root / "train" / "dog" / "002.png", root / "train" / "cat" / "009.png")
    renamed = load(root)
    assert renamed.y_train.tolist() == [0, 0, 0, 0, 1, 1]
    save(root / "train" / "cat" / "009.png", np.full((8, 8), 7, np.uint8))
    os.utime(root / "train" / "cat" / "009.png", ns=(1, 1))
    assert load(root).x_train[3, 0, 0] == 7


def test_read_only_folder_still_loads(tmp_path, monkeypatch, capsys):
    root = labeled_folder(tmp_path)

    def fail(*a, **k):
        raise OutputError("cannot write here", path=root)
    monkeypatch.setattr("as3l_plugin.io.write_with_sidecar", fail)
    ds = load(root)
    assert len(ds.y_train) == 5
    assert "cannot write the image cache" in capsys.readouterr().err


def test_unknown_option():
    with pytest.raises(TypeError, match="unknown option"):
        load_dataset("digits", img_sz=8)


# --------------------------------------------------------------------------- arrays
def test_arrays_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (6, 5, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1, -1, 1, 0, -1]),
             x_test=x[:2], y_test=np.array([1, 0]), classes=np.array(["a", "b"]))
    ds = load_dataset("arrays", tmp_path / "d.npz")
    np.testing.assert_array_equal(ds.x_train, x)
    assert ds.y_train.tolist() == [0, 1, -1, 1, 0, -1] and ds.y_train.dtype == np.int64
    assert ds.classes == ("a", "b") and ds.num_classes == 2 and ds.in_channels == 3
    assert ds.paths is None and ds.x_test.shape == (2, 5, 5, 3)
    np.savez(tmp_path / "u.npz", x_train=x[..., :1])  # (n, S, S, 1) is squeezed, unlabeled
    u = load_dataset("arrays", tmp_path / "u.npz", img_size=5)
    assert u.x_train.shape == (6, 5, 5) and (u.y_train == -1).all() and u.num_classes == 0
    assert u.x_test.shape == (0, 5, 5)


@pytest.mark.parametrize("arrays, match", [
    ({"y_train": np.zeros(3, int)}, "no x_train"),
    ({"x_train": np.zeros((3, 4, 4), np.float32)}, "uint8"),
    ({"x_train": np.zeros((3, 4, 5), np.uint8)}, "square"),
    ({"x_train": np.zeros((3, 4, 4), np.uint8), "y_train": np.zeros(2, int)}, "3 integer"),
    ({"x_train": np.zeros((3, 4, 4), np.uint8), "x_test": np.zeros((1, 4, 4), np.uint8)},
     "both"),
    ({"x_train": np.zeros((3, 4, 4), np.uint8), "y_train": np.array([0, 1, 2]),
      "classes": np.array(["a", "b"])}, "only 2 classes"),
    ({"x_train": np.zeros((3, 4, 4), np.uint8), "extra": np.zeros(1)}, "unknown"),
])
def test_arrays_errors(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset("arrays", tmp_path / "d.npz")
    assert str(tmp_path / "d.npz") in str(e.value)


def test_arrays_size_mismatch_and_missing(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ConfigError, match="img_size: =8 .*set img_size: 4"):
        load_dataset("arrays", tmp_path / "d.npz", img_size=8)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("arrays", tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable"):
        load_dataset("arrays", tmp_path / "bad.npz")


# --------------------------------------------------------------------------- export
IDS = tuple(str(i) for i in range(10))  # digits' class folders (the built-in has no names)


def _path_order(y, classes=IDS):
    return np.array(sorted(range(len(y)), key=lambda i: (classes[y[i]], i)), np.int64)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    ds = load_dataset("digits")
    root = tmp_path_factory.mktemp("export") / "digits"
    info = ud.export_folder(ds, root, progress=False)
    assert info == {"train": 1437, "test": 360, "classes": [str(i) for i in range(10)]}
    return ds, root


def test_exported_digits_load_as_builtin(digits_folder):
    ds, root = digits_folder
    f = load(root)
    order = _path_order(ds.y_train)
    np.testing.assert_array_equal(f.x_train, ds.x_train[order])
    np.testing.assert_array_equal(f.y_train, ds.y_train[order])
    t = _path_order(ds.y_test)
    np.testing.assert_array_equal(f.x_test, ds.x_test[t])
    np.testing.assert_array_equal(f.y_test, ds.y_test[t])
    assert f.classes == IDS and f.mean == ds.mean and f.std == ds.std
    assert f.paths[0] == f"train/0/{order[0]:06d}.png"


def test_exported_digits_same_seeded_kmeans_prior(digits_folder):
    """The prior computed from the folder equals the built-in loader's on the same images
    (the built-in rows taken in the folder's path order), row for row."""
    from as3l_plugin.propagation import get_propagator
    ds, root = digits_folder
    f = load(root)
    order = _path_order(ds.y_train)

    def pixels(x):
        return x.reshape(len(x), -1).astype(np.float32) / 255
    lb = np.arange(0, 1437, 100)
    P_f = get_propagator("seeded_kmeans", ks=(10, 20)).propagate(
        pixels(f.x_train), lb, f.y_train[lb], f.num_classes, seed=0)
    P_b = get_propagator("seeded_kmeans", ks=(10, 20)).propagate(
        pixels(ds.x_train[order]), lb, ds.y_train[order][lb], ds.num_classes, seed=0)
    assert P_f.shape == (1437, 10)
    np.testing.assert_array_equal(P_f, P_b)


def test_export_subset_and_refuses_nonempty(tmp_path):
    ds = load_dataset("digits")
    info = ud.export_folder(ds, tmp_path / "small", n=30, progress=False)
    assert info["train"] == 30 and info["test"] == 30
    f = load(tmp_path / "small")
    assert len(f.y_train) == 30 and sorted(f.x_train[:, 0, 0]) is not None
    with pytest.raises(OutputError, match="not an empty directory"):
        ud.export_folder(ds, tmp_path / "small", n=5, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["small"]  # no temporary left behind


def test_test_split_channels_must_match_train(tmp_path):
    save(tmp_path / "train" / "a" / "0.png", gray(5))
    save(tmp_path / "test" / "a" / "0.png", np.zeros((8, 8, 3)), mode="RGB")
    with pytest.raises(DatasetError, match="channels") as e:
        load(tmp_path)
    assert str(tmp_path / "test") in str(e.value)
    assert load(tmp_path, channels=3).x_test.shape == (1, 8, 8, 3)


def test_modes_16bit_palette_rgba(tmp_path):
    a16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    (tmp_path / "train").mkdir()
    Image.fromarray(a16).save(tmp_path / "train" / "a16.png")            # I;16 -> 1 channel
    Image.fromarray(gray(3)).convert("LA").save(tmp_path / "train" / "b.png")
    ds = load(tmp_path)
    assert ds.x_train.shape == (2, 8, 8)
    np.testing.assert_array_equal(ds.x_train[0], (a16 >> 8).astype(np.uint8))
    assert (ds.x_train[1] == 3).all()
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).convert("P").save(tmp_path / "train" / "c.png")   # palette -> RGB
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "train" / "d.png")
    ds = load(tmp_path, channels=3)
    assert ds.x_train.shape == (4, 8, 8, 3)
    assert ds.x_train[2, 0, 0, 0] > 150 and ds.x_train[3, 0, 0].tolist() == [200, 0, 0]


def test_select_writes_image_paths_for_folder_data(tmp_path, capsys):
    """`as3l select --dataset folder --data-dir PATH` fills to_annotate.csv's path column;
    features of another row count are refused (exit 2, one line naming the file)."""
    import csv

    from as3l_plugin.cli import main
    root = labeled_folder(tmp_path / "d")
    ds = load(root)
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    assert main(["select", "--features", str(tmp_path / "f.npy"), "--budget", "2", "--out",
                 str(tmp_path / "sel"), "--dataset", "folder", "--data-dir", str(root),
                 "--img-size", "8", "--sampler", "random"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "sel" / "to_annotate.csv")))
    assert len(rows) == 2 and all(r["path"] == ds.paths[int(r["index"])] for r in rows)
    assert main(["annotate", str(tmp_path / "sel"), "--dataset", "folder", "--data-dir",
                 str(root)]) == 0  # the page reads the folder's images (shown at 96 px)
    assert "cat" in (tmp_path / "sel" / "annotate.html").read_text()
    np.save(tmp_path / "g.npy", np.zeros((4, 4), np.float32))
    capsys.readouterr()
    assert main(["select", "--features", str(tmp_path / "g.npy"), "--budget", "2", "--out",
                 str(tmp_path / "sel2"), "--dataset", "folder", "--data-dir", str(root),
                 "--img-size", "8", "--sampler", "random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "g.npy" in err[0] and "5 images" in err[0]
    assert not (tmp_path / "sel2").exists()
