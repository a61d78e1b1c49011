"""The refresh benchmark (extract vs bank) runs end to end on a tiny synthetic pool."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("semilearn")


def test_prior_refresh_benchmark_tiny(capsys):
    from as3l_plugin.benchmarks import prior_refresh as bench
    assert bench.main(["--synthetic", "--n", "200", "--rounds", "2", "--ks", "10",
                       "--num-labels", "20", "--interval", "5", "--eval-batch-size", "64"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("extract", "bank")}
    assert set(rows) == {"extract", "bank"}
    assert rows["extract"][4] == "200" and rows["bank"][4] == "20"  # rows extracted
    assert "ratio extract / bank" in out and "pool 200 (synthetic" in out
