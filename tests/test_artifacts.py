"""One schema for the selection and prior sidecars (:mod:`as3l_plugin.artifacts`): ``as3l
select`` / ``as3l prior`` and ``as3l run``'s select / prior stages write the same keys, and
``as3l train``'s start-up checks accept sidecars written before the schema was unified."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from as3l_plugin import artifacts
from as3l_plugin import pipeline as pl
from as3l_plugin import stages as sr
from as3l_plugin.offline import prior_from_selection, select_to_dir
from as3l_plugin.datasets import load_dataset
from as3l_plugin.errors import StaleInputError
from as3l_plugin.features.choose import pixel_features
from as3l_plugin.io import atomic_save_npy, index_filename, read_sidecar

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "usb_configs" / "digits"
LB = index_filename(10, 0)

#: the keys ``as3l prior`` wrote before the one schema (no labeled_idx_sha256, features, ...)
OLD_PRIOR_KEYS = ("kind", "dataset", "n", "num_classes", "budget", "propagator", "params",
                  "params_effective", "seed", "sampler", "selection_seed", "features_file",
                  "features_sha256", "index_file", "index_sha256", "labels_source",
                  "labels_file", "labels_sha256", "labeled_per_class", "coverage",
                  "n_uniform", "package_version")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The pipeline's select / labels / prior stages on pixel features, and ``as3l select`` +
    ``as3l prior`` on the same features with the same sampler, propagator and seeds."""
    tmp = tmp_path_factory.mktemp("artifacts")
    base = {"name": "tiny", "dataset": "digits", "net": "cnn4", "num_labels": 10, "seed": 0,
            "select": {"features": "pixels"}, "prior": {"features": "pixels"},
            "as3l_flexmatch": {"config": str(DIGITS / "as3l_flexmatch_digits_10_0.yaml"),
                               "prior_T": 10, "prior_mode": "remove"},
            "baseline": {"config": str(DIGITS / "flexmatch_lbidx_digits_10_0.yaml")}}
    (tmp / "run.yaml").write_text(yaml.safe_dump(base))
    cfg = pl.load_config(base)
    stages = {s.name: s for s in pl.build_stages(cfg)}
    keep = [stages[k] for k in ("select", "labels", "prior")]
    assert all(not s.inputs or set(s.inputs) <= {"select", "labels"} for s in keep)
    run = tmp / "run"
    sr.run_stages(keep, run, log=lambda m: None)

    ds = load_dataset("digits")
    atomic_save_npy(tmp / "pix.npy", pixel_features(ds.x_train))
    atomic_save_npy(tmp / "y.npy", ds.y_train)
    sel, pri = stages["select"].params, stages["prior"].params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        select_to_dir(tmp / "pix.npy", sel["budget"], sampler=sel["sampler"],
                      params=sel["params"], seed=sel["seed"], out_dir=tmp / "sel",
                      dataset="digits")
        prior_from_selection(tmp / "pix.npy", index=tmp / "sel" / LB,
                             oracle_labels=tmp / "y.npy", num_classes=10,
                             propagator=pri["propagator"], params=pri["params"],
                             seed=pri["seed"], out=tmp / "prior.npy")
    return {"tmp": tmp, "run_index": run / "select" / LB, "run_prior": run / "prior" / pl.PRIOR,
            "index": tmp / "sel" / LB, "prior": tmp / "prior.npy"}


def test_both_producers_write_the_same_keys(both):
    s_run, s_cli = read_sidecar(both["run_index"]), read_sidecar(both["index"])
    assert set(s_run) == set(s_cli) == artifacts.SELECTION_KEYS
    p_run, p_cli = read_sidecar(both["run_prior"]), read_sidecar(both["prior"])
    assert set(p_run) == set(p_cli) == artifacts.PRIOR_KEYS
    # the same inputs give the same identities, whichever producer wrote them
    for k in ("kind", "n", "num_features", "budget", "seed", "sampler", "params",
              "params_effective", "features_sha256", "lb_index_file", "annotation_file"):
        assert s_run[k] == s_cli[k], k
    np.testing.assert_array_equal(np.load(both["run_index"]), np.load(both["index"]))
    for k in ("kind", "n", "num_classes", "budget", "propagator", "params", "seed", "sampler",
              "selection_seed", "features_sha256", "labeled_idx_sha256",
              "labeled_per_class"):
        assert p_run[k] == p_cli[k], k
    # what differs is where the features / labels came from, under the same names
    assert (s_run["features"], s_run["features_file"]) == ("pixels", None)
    assert s_cli["features"] is None and Path(s_cli["features_file"]).name == "pix.npy"
    assert (p_run["labels_source"], p_cli["labels_source"]) == ("dataset", "oracle")
    assert Path(p_run["labels_file"]).name == pl.LABELS


def _train_args(tmp, index, prior):
    pytest.importorskip("torch")
    pytest.importorskip("semilearn")
    import as3l_plugin.usb  # noqa: F401
    from as3l_plugin.usb.train import get_config
    return get_config(str(DIGITS / "as3l_flexmatch_digits_10_0.yaml"), lb_index_file=str(index),
                      prior_file=str(prior), save_dir=str(tmp / "runs"), gpu="cpu")


def test_old_style_prior_sidecar_still_passes_the_train_checks(both):
    from as3l_plugin.usb.checks import check_run_inputs
    tmp = both["tmp"]
    side = read_sidecar(both["prior"])
    old = {k: side[k] for k in OLD_PRIOR_KEYS}  # as `as3l prior` wrote it before
    Path(str(both["prior"]) + ".json").write_text(json.dumps(old, indent=2, sort_keys=True))
    try:
        out = check_run_inputs(_train_args(tmp, both["index"], both["prior"]))
        np.testing.assert_array_equal(out["lb"], np.load(both["index"]))
        # an old sidecar names its labeled set by the index file's bytes only
        other = tmp / "other_idx.npy"
        atomic_save_npy(other, np.load(both["index"])[::-1].copy())
        with pytest.raises(StaleInputError, match="propagated from another labeled set"):
            check_run_inputs(_train_args(tmp, other, both["prior"]))
    finally:
        Path(str(both["prior"]) + ".json").write_text(
            json.dumps(side, indent=2, sort_keys=True) + "\n")


def test_new_sidecars_pass_the_train_checks_from_either_producer(both):
    from as3l_plugin.usb.checks import check_run_inputs
    tmp = both["tmp"]
    for index, prior in ((both["index"], both["prior"]),
                         (both["run_index"], both["run_prior"]),
                         (both["index"], both["run_prior"])):  # the same labeled set
        check_run_inputs(_train_args(tmp, index, prior))
    # the same indices stored as int32: the same labeled set (labeled_idx_sha256)
    as32 = tmp / "idx32.npy"
    atomic_save_npy(as32, np.load(both["index"]).astype(np.int32))
    check_run_inputs(_train_args(tmp, as32, both["prior"]))


FIXTURE_V0 = Path(__file__).parent / "fixtures" / "sidecars_v0"


def test_files_of_the_release_before_format_version_still_read(tmp_path):
    """tests/fixtures/sidecars_v0: an index, to_annotate.csv and a prior written by commit
    14007a0 (no format_version). Today's `as3l prior` reads the selection and makes the same
    prior bytes (now with format_version 1), evaluate-prior and the `as3l train` start-up
    checks read the old prior, and a sidecar from a newer format is refused by name."""
    import shutil

    from as3l_plugin.cli import main
    from as3l_plugin.usb.checks import check_run_inputs

    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE_V0, ws)
    old_sel = artifacts.read_artifact_sidecar(ws / "sel" / "lb_labels10_1_seed0_idx.npy")
    old_prior = artifacts.read_artifact_sidecar(ws / "prior.npy")
    assert "format_version" not in old_sel and "format_version" not in old_prior
    assert main(["prior", "--features", str(ws / "X.npy"), "--select-dir", str(ws / "sel"),
                 "--num-classes", "10", "--out", str(ws / "new.npy")]) == 0
    assert np.load(ws / "new.npy").tobytes() == np.load(ws / "prior.npy").tobytes()
    assert read_sidecar(ws / "new.npy")["format_version"] == artifacts.FORMAT_VERSION
    assert main(["evaluate-prior", "--prior", str(ws / "prior.npy"), "--labels",
                 str(ws / "y.npy"), "--exclude", str(ws / "sel" / "lb_labels10_1_seed0_idx.npy"),
                 "--json"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = check_run_inputs(_train_args(tmp_path, ws / "sel" / "lb_labels10_1_seed0_idx.npy",
                                           ws / "prior.npy"))
    np.testing.assert_array_equal(out["lb"], np.load(ws / "sel" / "lb_labels10_1_seed0_idx.npy"))
    side = dict(old_prior, format_version=artifacts.FORMAT_VERSION + 1)
    Path(str(ws / "prior.npy") + ".json").write_text(json.dumps(side))
    with pytest.raises(StaleInputError, match="reads sidecars up to version") as ei:
        artifacts.read_artifact_sidecar(ws / "prior.npy")
    assert ei.value.field == "format_version"
