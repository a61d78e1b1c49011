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
