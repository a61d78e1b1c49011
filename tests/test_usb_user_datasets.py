"""`dataset: folder` / `dataset: arrays` in USB: lb_index_file for every algorithm, labels from
lb_labels_file for an unlabeled pool, the file-list checksum in sidecars."""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("semilearn")

import as3l_plugin.usb  # noqa: E402,F401
from as3l_plugin.datasets import load_dataset  # noqa: E402
from as3l_plugin.errors import ConfigError, StaleInputError  # noqa: E402
from as3l_plugin.usb.checks import check_run_inputs  # noqa: E402
from as3l_plugin.usb.train import build_algorithm, get_config  # noqa: E402
from as3l_plugin.user_datasets import export_folder  # noqa: E402

TINY = Path(__file__).with_name("usb_tiny.yaml")
LB = np.array([3, 99, 300, 7, 412, 64, 8, 400, 250, 177, 31, 42], dtype=np.int64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("usbfolder") / "digits"
    export_folder(load_dataset("digits"), root, n=500, n_test=60, progress=False)
    return root


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    p = np.full((500, 10), 0.1, np.float32)
    path = tmp_path_factory.mktemp("prior") / "prior.npy"
    np.save(path, p)
    return str(path)


def _config(tmp_path, root, **kw):
    np.save(tmp_path / "lb.npy", LB)
    kw.setdefault("lb_index_file", str(tmp_path / "lb.npy"))
    return get_config(TINY, dataset="folder", data_dir=str(root), img_size=8,
                      num_labels=len(LB), save_dir=str(tmp_path), gpu="cpu", **kw)


@pytest.mark.parametrize("algorithm", ["fixmatch", "flexmatch", "freematch", "softmatch",
                                       "fullysupervised", "as3l_flexmatch"])
def test_folder_lb_index_file_for_every_algorithm(tmp_path, folder, prior_file, algorithm):
    ds = load_dataset("folder", folder, img_size=8, progress=False)
    args = _config(tmp_path, folder, algorithm=algorithm, prior_file=prior_file)
    d = build_algorithm(args).dataset_dict
    np.testing.assert_array_equal(d["train_lb"].orig_index, LB)
    np.testing.assert_array_equal(d["train_lb"].data, ds.x_train[LB])
    np.testing.assert_array_equal(d["train_lb"].targets, ds.y_train[LB])
    assert len(d["eval"]) == len(ds.y_test) == 60


def test_unlabeled_pool_needs_lb_labels_file(tmp_path, folder):
    import shutil
    root = tmp_path / "pool"
    shutil.copytree(folder, root)
    for p in sorted((root / "train").rglob("*.png")):  # flatten: the pool loses its labels
        p.rename(root / "train" / f"{p.parent.name}_{p.name}")
    ds = load_dataset("folder", root, img_size=8, progress=False)
    assert (ds.y_train == -1).all() and ds.num_classes == 10
    args = _config(tmp_path, root, algorithm="fixmatch")
    with pytest.raises(ConfigError, match="lb_labels_file"):
        build_algorithm(args)
    labels = [(i + 3) % 10 for i in range(len(LB))]
    (tmp_path / "ann.csv").write_text("index,label\n" + "".join(
        f"{i},{y}\n" for i, y in zip(LB, labels)))
    args = _config(tmp_path, root, algorithm="fixmatch", lb_labels_file=str(tmp_path / "ann.csv"))
    d = build_algorithm(args).dataset_dict
    assert d["train_lb"].targets.tolist() == labels
    args = _config(tmp_path, root, algorithm="fixmatch", lb_index_file=None)
    with pytest.raises(ConfigError, match="unlabeled samples"):
        build_algorithm(args)


def test_arrays_in_usb(tmp_path):
    ds = load_dataset("digits")
    np.savez(tmp_path / "d.npz", x_train=ds.x_train[:200], y_train=ds.y_train[:200],
             x_test=ds.x_test[:40], y_test=ds.y_test[:40])
    np.save(tmp_path / "lb.npy", LB[LB < 200])
    args = get_config(TINY, dataset="arrays", data_dir=str(tmp_path / "d.npz"), img_size=8,
                      algorithm="flexmatch", num_labels=int((LB < 200).sum()),
                      lb_index_file=str(tmp_path / "lb.npy"), save_dir=str(tmp_path), gpu="cpu")
    d = build_algorithm(args).dataset_dict
    np.testing.assert_array_equal(d["train_lb"].data, ds.x_train[LB[LB < 200]])
    with pytest.raises(ConfigError, match="img_size"):
        build_algorithm(get_config(TINY, dataset="arrays", data_dir=str(tmp_path / "d.npz"),
                                   img_size=32, algorithm="flexmatch", save_dir=str(tmp_path),
                                   gpu="cpu"))


def test_stale_file_list_refused(tmp_path, folder, prior_file):
    """An index whose sidecar records another file list is refused, naming the sidecar."""
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    ds = load_dataset("folder", root, img_size=8, progress=False)
    args = _config(tmp_path, root, algorithm="as3l_flexmatch", prior_file=prior_file)
    side = {"n": 500, "dataset": "folder", "dataset_files_sha256": ds.files_sha256}
    (tmp_path / "lb.npy.json").write_text(json.dumps(side))
    check_run_inputs(args)  # same files: fine
    victim = root / ds.paths[0]
    victim.rename(victim.with_name("zz_renamed.png"))
    with pytest.raises(StaleInputError, match="images were added, removed or renamed") as e:
        check_run_inputs(args)
    assert str(tmp_path / "lb.npy") in str(e.value) and "\n" not in str(e.value)
    # the prior's sidecar is checked the same way
    side["dataset_files_sha256"] = load_dataset("folder", root, img_size=8,
                                                progress=False).files_sha256
    (tmp_path / "lb.npy.json").write_text(json.dumps(side))
    Path(prior_file + ".json").write_text(json.dumps({"n": 500, "num_classes": 10,
                                                      "dataset_files_sha256": ds.files_sha256}))
    try:
        with pytest.raises(StaleInputError, match="this prior was made") as e:
            check_run_inputs(args)
        assert prior_file in str(e.value)
    finally:
        Path(prior_file + ".json").unlink()


def test_fewer_images_than_budget(tmp_path, folder):
    from as3l_plugin.errors import DatasetError
    args = get_config(TINY, dataset="folder", data_dir=str(folder), img_size=8,
                      algorithm="flexmatch", num_labels=600, save_dir=str(tmp_path), gpu="cpu")
    with pytest.raises(DatasetError, match="fewer than num_labels=600") as e:
        build_algorithm(args)
    assert str(folder) in str(e.value)


def test_lb_labels_file_takes_class_names(tmp_path, folder):
    """An annotated CSV with class *names* (the folder's class folders) trains like ids."""
    import shutil
    root = tmp_path / "named"
    shutil.copytree(folder, root)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for split in ("train", "test"):
        for c, name in enumerate(names):
            (root / split / str(c)).rename(root / split / name)
    (root / "classes.txt").write_text("\n".join(names) + "\n")
    ds = load_dataset("folder", root, img_size=8, progress=False)
    assert list(ds.classes) == names
    labels = [(i + 3) % 10 for i in range(len(LB))]
    (tmp_path / "ann.csv").write_text("index,label\n" + "".join(
        f"{i},{names[y]}\n" for i, y in zip(LB, labels)))
    args = _config(tmp_path, root, algorithm="fixmatch", lb_labels_file=str(tmp_path / "ann.csv"))
    assert build_algorithm(args).dataset_dict["train_lb"].targets.tolist() == labels
