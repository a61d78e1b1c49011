"""Smoke test of the K-means engines benchmark at a tiny size (no timing assertions)."""
import json

import torch

from as3l_plugin.benchmarks import kmeans_engines as bench


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_tiny_run_prints_a_table_that_parses(capsys, tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "r.json"
    assert bench.main(["--sizes", "2000x16x5", "--rounds", "1", "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # restored
    text = capsys.readouterr().out
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| engine") \
                and not line.startswith("| distance"):
            cells = _cells(line)
            rows[cells[0]] = cells[1:]
    assert "ours" in rows and "sklearn" in rows
    for name in ("ours", "faiss", "sklearn"):
        if name in rows:
            iters, wall, cpu, per_iter, gflops, pct, ratio = rows[name]
            assert 1 <= int(iters) <= 20 and float(wall) > 0 and float(per_iter) > 0
            assert float(cpu) >= 0 and pct.endswith("%")
            assert float(gflops) > 0 and float(ratio) > 0
    assert float(rows["ours"][-1]) == 1.0
    for name in bench.PRODUCTS:
        wall, cpu, gflops, pct, ratio = rows[name]
        assert float(wall) > 0 and float(gflops) > 0 and pct.endswith("%")
    assert rows["torch mm"][3] == "100%"
    assert "of the torch mm throughput per Lloyd iteration" in text
    res = json.loads(out.read_text())
    assert [(r["n"], r["d"], r["K"]) for r in res] == [(2000, 16, 5)]
    assert set(res[0]["products"]) == set(bench.PRODUCTS)


def test_sizes_are_parsed_and_checked():
    assert bench.parse_sizes("50000x512x100,10X2x3") == [(50000, 512, 100), (10, 2, 3)]
    for bad in ("5x5", "0x2x1", "3x2x4", "ax2x1"):
        try:
            bench.parse_sizes(bad)
        except Exception as e:  # argparse.ArgumentTypeError
            assert "size" in str(e)
        else:
            raise AssertionError(bad)
