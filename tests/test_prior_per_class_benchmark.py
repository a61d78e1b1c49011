"""The per-class prior benchmark reads a bench directory's stored labels, prior and finished
cells (digits labels, hand-made prior and USB log; no training, no K-means)."""

import numpy as np
import pytest

from as3l_plugin.annotations import HEADER, annotation_rows
from as3l_plugin.bench import CELLS_CSV
from as3l_plugin.benchmarks import prior_per_class as ppc
from as3l_plugin.datasets import load_dataset
from as3l_plugin.io import atomic_write_csv


def _usb_log(cm):
    return ("[2026-12-06 04:37:25,188 INFO] Model training\n"
            "[2026-12-06 05:40:28,311 INFO] confusion matrix:\n" + np.array_str(cm) + "\n"
            "[2026-12-06 05:40:28,361 INFO] 30 iteration, USE_EMA: True\n")


@pytest.fixture
def bench(tmp_path):
    y = load_dataset("digits", progress=False).y_train
    b = tmp_path / "b"
    # seed 3: two labels of class 0, none of class 9; the prior is right except that class 1
    # is predicted as 2 everywhere
    idx = np.concatenate([np.flatnonzero(y == 0)[:2],
                          [np.flatnonzero(y == c)[0] for c in range(1, 9)]])
    d = b / "labels" / "seed3" / "first_b10"
    (d / "labels").mkdir(parents=True)
    atomic_write_csv(d / "labels" / "labels.csv", HEADER, annotation_rows(idx, y[idx]))
    pred = np.where(y == 1, 2, y)
    pred[idx] = 3                                       # wrong on the labeled rows: not scored
    (d / "prior_seeded_kmeans").mkdir()
    np.save(d / "prior_seeded_kmeans" / "prior.npy", np.eye(10, dtype=np.float32)[pred])
    # a labeled set without a stored prior is skipped
    (b / "labels" / "seed4" / "first_b10" / "labels").mkdir(parents=True)
    atomic_write_csv(b / "labels" / "seed4" / "first_b10" / "labels" / "labels.csv", HEADER,
                     annotation_rows(idx, y[idx]))
    cm = np.eye(10)
    cm[1] = 0.0
    cm[1, 1], cm[1, 2] = 0.5, 0.5                       # the trained model half-fixes class 1
    log = b / "cells" / "c1" / "train" / "usb"
    log.mkdir(parents=True)
    (log / "log.txt").write_text(_usb_log(cm))
    # cells of other labeled sets (another sampler, seed or budget), each with its own log
    for c in ("c2", "c3", "c4"):
        other = b / "cells" / c / "train" / "usb"
        other.mkdir(parents=True)
        (other / "log.txt").write_text(_usb_log(np.full((10, 10), 0.1)))
    atomic_write_csv(b / CELLS_CSV, ["sampler", "algorithm", "budget", "seed", "final_acc",
                                     "metrics"],
                     [["other", "algo", 10, 3, 0.5, "cells/c2/train/usb/metrics.csv"],
                      ["first", "algo", 10, 4, 0.5, "cells/c3/train/usb/metrics.csv"],
                      ["first", "algo", 40, 3, 0.5, "cells/c4/train/usb/metrics.csv"],
                      ["first", "algo", 10, 3, 0.95, "cells/c1/train/usb/metrics.csv"]])
    return b, y, idx


def test_counts_recall_and_final_per_class(bench, capsys, tmp_path):
    b, y, idx = bench
    sets = ppc.run("digits", [b])
    assert len(sets) == 1                               # seed 4 has no stored prior
    s = sets[0]
    assert (s["seed"], s["sampler"], s["budget"]) == (3, "first", 10)
    np.testing.assert_array_equal(s["counts"], [2, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    expect = np.ones(10)
    expect[1] = 0.0
    np.testing.assert_array_equal(s["recall"], expect)
    keep = np.ones(len(y), bool)
    keep[idx] = False
    assert s["acc"] == pytest.approx(np.mean(y[keep] != 1))
    assert list(s["cells"]) == ["algo"]
    acc, diag = s["cells"]["algo"]
    assert acc == 0.95 and diag[1] == 0.5 and diag[0] == 1.0
    assert ppc._gap(diag, s["recall"]) == pytest.approx(5.0)   # |0.5 - 0| / 10 classes
    out = tmp_path / "t.md"
    ppc.main(["--dataset", "digits", "--bench", str(b), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("Command: `python -m as3l_plugin.benchmarks.prior_per_class")
    assert "| + algo final | 95 | 100 | 50 |" in text and text.count("| 5.0 |") == 2
    assert "| first (10), 1 seed(s) | labels |  | 2.0 | 1.0 |" in text


def test_a_bench_without_cells_still_gives_the_prior_rows(bench):
    b, _, _ = bench
    (b / CELLS_CSV).unlink()
    (s,) = ppc.run("digits", [b])
    assert s["cells"] == {} and s["recall"][0] == 1.0


def test_no_stored_prior_is_an_error(bench):
    b, _, _ = bench
    with pytest.raises(SystemExit, match="prior_uniform_knn/prior.npy"):
        ppc.main(["--dataset", "digits", "--bench", str(b), "--propagator", "uniform_knn"])
