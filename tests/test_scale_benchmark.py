"""Smoke test of the scale benchmark at toy size (no timing assertions)."""
import json

import numpy as np

from as3l_plugin.benchmarks import scale


def test_scale_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "scale.json"
    assert scale.main(["--n", "3000", "--dim", "8", "--steps", "as3l:5", "prior",
                       "typiclust:5", "--work", str(tmp_path), "--mmap", "--json",
                       str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["step"] for r in res["steps"]] == ["as3l:5", "prior", "typiclust:5"]
    for r in res["steps"]:
        assert r["wall_s"] > 0 and r["features_bytes"] == 3000 * 8 * 4 and r["mmap"]
    assert res["steps"][1]["labeled"] == 5          # the prior used the as3l:5 selection
    text = capsys.readouterr().out
    assert "| as3l:5 |" in text and "peak extra memory" in text
    # the data file is written block by block and reused
    fx, fy = scale.gmm_file(tmp_path, 3000, 8)
    X, y = np.load(fx), np.load(fy)
    assert X.shape == (3000, 8) and X.dtype == np.float32 and set(np.unique(y)) <= set(range(10))
    assert scale.gmm_file(tmp_path, 3000, 8) == (fx, fy)


def test_fit_rows_quality_tiny(monkeypatch, capsys):
    """The subsample-vs-all-rows comparison runs both fits and prints paired rows (a
    mixture stands in for Fashion-MNIST)."""
    from as3l_plugin import clustering
    from as3l_plugin.benchmarks import fit_rows_quality as fq
    from as3l_plugin.benchmarks.offline_speed import make_gmm

    monkeypatch.setattr(fq, "pca_pixels", lambda dim=50: make_gmm(n=4000, dim=8, spread=2.0))
    floor = clustering.FIT_ROWS_MIN
    assert fq.main(["--seeds", "0", "--budgets", "10", "--fit-rows", "1000"]) == 0
    assert clustering.FIT_ROWS_MIN == floor            # restored
    text = capsys.readouterr().out
    row = [line for line in text.splitlines() if line.startswith("| 10 | 0 |")][0]
    full, sub = (float(v) for v in row.strip("| ").split("|")[2:4])
    assert 0 < full <= 100 and 0 < sub <= 100 and "| 10 | mean |" in text
