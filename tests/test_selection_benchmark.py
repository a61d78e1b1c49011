import csv

from as3l_plugin.benchmarks import offline_quality as oq


def test_offline_quality_smoke(tmp_path, capsys):
    out = tmp_path / "q"
    rc = oq.main(["--datasets", "digits", "--seeds", "1", "--per-class", "1",
                  "--samplers", "random", "as3l", "kmedoids", "typiclust",
                  "--propagators", "knn", "seeded_kmeans", "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "offline_quality.csv")))
    assert len(rows) == 4 * 2
    assert {r["sampler"] for r in rows} == {"random", "as3l", "kmedoids", "typiclust"}
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and 1 <= int(r["coverage"]) <= 10
        assert r["budget"] == "10" and r["n"] == "1437"
    md = (out / "offline_quality.md").read_text()
    assert "## digits (n = 1437)" in md and "### as3l" in md and "| digits | 1 |" in md
    # random + label_spreading (a peer of the targets) was not run: no margin against it
    (target_row,) = [ln for ln in md.splitlines() if ln.startswith("| digits | 1 |")]
    assert target_row.split(" | ")[2] == "–" and target_row.split(" | ")[-1] in ("no |", "– |")
    assert sorted(p.name for p in out.iterdir()) == ["offline_quality.csv",
                                                     "offline_quality.md"]


def _quality_rows(spec):
    """Hand-made offline_quality rows: {(sampler, propagator): (accuracy, coverage)}."""
    return [{"dataset": "digits", "per_class": 1, "seed": 0, "n": 100, "sampler": s,
             "propagator": p, "accuracy": a, "coverage": c, "select_s": 0.0,
             "propagate_s": 0.0} for (s, p), (a, c) in spec.items()]


def test_offline_quality_all_met_needs_every_comparison():
    """"all met": "no" once a comparison made fails (even with a peer missing), "yes" only with
    every peer compared and passed, "–" when a peer is missing and none of the rest fails."""
    ours = {("as3l", "seeded_kmeans"): (0.8, 10)}
    full = {("random", "label_spreading"): (0.5, 8), ("kmedoids", "seeded_kmeans"): (0.6, 9),
            ("typiclust", "seeded_kmeans"): (0.7, 10)}

    def met(spec):
        md = oq.summarize(_quality_rows(spec))
        (row,) = [ln for ln in md.splitlines() if ln.startswith("| digits | 1 |")]
        return row.rsplit("|", 2)[1].strip()

    assert met({**ours, **full}) == "yes"
    missing = {k: v for k, v in full.items() if k[0] != "random"}
    assert met({**ours, **missing}) == "–"
    assert met({**ours, **missing, ("typiclust", "seeded_kmeans"): (0.9, 10)}) == "no"
    assert met({**ours, **full, ("typiclust", "seeded_kmeans"): (0.7, 11)}) == "no"  # coverage


def test_offline_quality_typical_row_is_the_faithful_sampler_with_typical_representatives(
        tmp_path, capsys):
    """``as3l[typical]`` runs AS3LSampler(representative='typical'): its coverage is that
    sampler's, and on digits at 1 label/class it picks another set than the medoid."""
    import numpy as np
    from as3l_plugin.metrics import class_coverage
    from as3l_plugin.selection import get_sampler
    rc = oq.main(["--datasets", "digits", "--seeds", "1", "--per-class", "1", "--samplers",
                  "as3l[typical]", "--propagators", "knn", "--out", str(tmp_path / "q")])
    assert rc == 0
    (row,) = list(csv.DictReader(open(tmp_path / "q" / "offline_quality.csv")))
    X, y, C = oq.load_features("digits")
    idx = get_sampler("as3l", representative="typical").select(X, C, seed=0)
    assert row["sampler"] == "as3l[typical]" and int(row["coverage"]) == class_coverage(y[idx], C)
    assert not np.array_equal(np.sort(idx), np.sort(get_sampler("as3l").select(X, C, seed=0)))
    # no peer in the run: the targets row has no margins (it used to stop on max([]))
    md = (tmp_path / "q" / "offline_quality.md").read_text()
    assert "| digits | 1 | – | – | – | – | – |" in md


def test_pca_features_are_deterministic():
    import numpy as np
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(200, 8, 8), dtype=np.uint8)
    a = oq.pca_features(imgs, dim=10)
    b = oq.pca_features(imgs.copy(), dim=10)
    assert a.dtype == np.float32 and a.shape == (200, 10)
    assert a.tobytes() == b.tobytes()


def test_offline_quality_on_learned_features_per_seed(tmp_path, capsys):
    """--features DATASET=FILE with {seed}: each seed reads its own file (here: class-
    separated features for seed 0, noise for seed 1, so the priors differ as they should)."""
    import numpy as np
    import pytest

    from as3l_plugin.datasets import load_dataset
    from as3l_plugin.errors import InputError
    y = load_dataset("digits").y_train
    rng = np.random.default_rng(0)
    np.save(tmp_path / "f0.npy", (np.eye(10)[y] * 10 + rng.normal(size=(len(y), 10))).astype(np.float32))
    np.save(tmp_path / "f1.npy", rng.normal(size=(len(y), 10)).astype(np.float32))
    oq.learned_features.cache_clear()
    rc = oq.main(["--datasets", "digits", "--seeds", "2", "--per-class", "1",
                  "--samplers", "kmedoids", "--propagators", "seeded_kmeans",
                  "--features", f"digits={tmp_path}/f{{seed}}.npy", "--out", str(tmp_path / "q")])
    assert rc == 0
    rows = {r["seed"]: r for r in csv.DictReader(open(tmp_path / "q" / "offline_quality.csv"))}
    assert float(rows["0"]["accuracy"]) > 0.95 > 0.5 > float(rows["1"]["accuracy"])
    np.save(tmp_path / "g0.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(InputError, match="has 5 rows") as ei:
        oq.main(["--datasets", "digits", "--seeds", "1", "--samplers", "random",
                 "--features", f"digits={tmp_path}/g{{seed}}.npy"])
    assert "g0.npy" in str(ei.value)
    with pytest.raises(SystemExit):
        oq.main(["--features", "mnist=x.npy"])
