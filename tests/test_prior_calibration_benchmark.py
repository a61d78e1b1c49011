"""The prior-calibration benchmark reads a bench directory's labeled sets and scores both
`uncovered` modes of the seeded-K-means prior (digits, real propagation, seconds)."""

import numpy as np

from as3l_plugin.annotations import HEADER, annotation_rows
from as3l_plugin.benchmarks import prior_calibration as pc
from as3l_plugin.datasets import load_dataset
from as3l_plugin.io import atomic_write_csv


def _bench(tmp_path):
    ds = load_dataset("digits")
    y = ds.y_train
    X = ds.x_train.reshape(len(y), -1).astype(np.float32)
    bench = tmp_path / "b"
    (bench / "shared").mkdir(parents=True)
    np.save(bench / "shared" / "f.npy", X)
    for seed, sampler in ((3, "first"), (4, "first"), (3, "other")):
        idx = np.array([np.flatnonzero(y == c)[seed if sampler == "first" else 10]
                        for c in range(10)])
        d = bench / "labels" / f"seed{seed}" / f"{sampler}_b10" / "labels"
        d.mkdir(parents=True)
        atomic_write_csv(d / "labels.csv", HEADER, annotation_rows(idx, y[idx]))
    return bench, X, y


def test_scores_both_modes_of_every_labeled_set(tmp_path, capsys):
    bench, X, y = _bench(tmp_path)
    out = tmp_path / "t.md"
    pc.main(["--dataset", "digits", "--bench", str(bench), "--features", "shared/f.npy",
             "--samplers", "first", "--out", str(out)])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| b |")]
    assert [(r[1].strip(), r[2].strip(), r[4].strip()) for r in rows] == [
        ("3", "first", "ignore"), ("3", "first", "uniform"),
        ("4", "first", "ignore"), ("4", "first", "uniform")]
    text = out.read_text()
    assert text.startswith("Command: `python -m as3l_plugin.benchmarks.prior_calibration")
    assert text.count("\n| b |") == 4
    # the table's figures are the metrics of the propagator's prior, not made up
    from as3l_plugin.metrics import expected_calibration_error, selective_accuracy
    from as3l_plugin.propagation import SeededKMeansPropagator
    idx = np.array([np.flatnonzero(y == c)[3] for c in range(10)])
    P = SeededKMeansPropagator(uncovered="uniform").propagate(X, idx, y[idx], 10, seed=3)
    r = pc.score(P, y, idx)
    assert f"{100 * r['ece']:.1f}" == rows[1][6].strip()
    assert f"{100 * r['top50']:.1f}" == rows[1][9].strip()
    assert r["ece"] == expected_calibration_error(P, y, exclude=idx)
    assert r["top25"] == selective_accuracy(P, y, 0.25, exclude=idx)
    # uniform votes lower the mean confidence of a near one-hot prior
    ign = pc.score(SeededKMeansPropagator().propagate(X, idx, y[idx], 10, seed=3), y, idx)
    assert r["conf"] < ign["conf"]


def test_no_labeled_sets_is_a_clear_error(tmp_path):
    import pytest
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no labels/seed"):
        pc.main(["--dataset", "digits", "--bench", str(tmp_path / "empty"),
                 "--features", "f.npy"])
