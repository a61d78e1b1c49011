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
    assert sorted(p.name for p in out.iterdir()) == ["offline_quality.csv",
                                                     "offline_quality.md"]


def test_pca_features_are_deterministic():
    import numpy as np
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(200, 8, 8), dtype=np.uint8)
    a = oq.pca_features(imgs, dim=10)
    b = oq.pca_features(imgs.copy(), dim=10)
    assert a.dtype == np.float32 and a.shape == (200, 10)
    assert a.tobytes() == b.tobytes()
