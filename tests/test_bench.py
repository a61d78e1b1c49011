"""`as3l bench`: grid planning, resumable cell bookkeeping, tables (stand-in stages), and the
real `as3l bench --quick` on a 2-cell grid."""

import csv
from pathlib import Path

import numpy as np
import pytest

from as3l_plugin import bench as bn
from as3l_plugin import pipeline as pl
from as3l_plugin import report as rp
from as3l_plugin.errors import ConfigError
from as3l_plugin.io import atomic_save_npy, atomic_write_csv, write_with_sidecar, index_filename


def quiet(_msg):
    pass


# --------------------------------------------------------------------------- stand-in stages
def _fake_feature(ctx):
    rng = np.random.default_rng(ctx.params.get("seed", 0))
    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    X = (np.eye(10)[y] * 5 + rng.normal(size=(len(y), 10))).astype(np.float32)
    if ctx.name == "pretrain":
        (ctx.dir / pl.BACKBONE).write_bytes(b"weights")
    else:
        atomic_save_npy(ctx.dir / (pl.F_SELF if ctx.name == "features" else pl.F_FINE), X)
    return {}


def _fake_select(ctx):
    p = ctx.params
    rng = np.random.default_rng(p["seed"] + (0 if p["sampler"] == "good" else 100))
    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    if p["sampler"] == "good":  # one per class first
        idx = np.array([np.flatnonzero(y == c % 10)[c // 10] for c in range(p["budget"])])
    else:
        idx = rng.choice(len(y), p["budget"], replace=False)
    name = index_filename(p["budget"], p["seed"])
    write_with_sidecar(ctx.dir / name, idx.astype(np.int64), {"budget": p["budget"]})
    return {"index_file": name, "n": len(y)}


def _fake_prior(ctx):
    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    lab = pl._read_labels(ctx.inputs["labels"])
    prior = np.full((len(y), 10), 0.05, dtype=np.float32)
    prior[np.arange(len(y)), y] = 0.55
    write_with_sidecar(ctx.dir / pl.PRIOR, prior, {})
    return pl.prior_diagnostics(prior, y, lab[:, 0], 10)


def _fake_train(ctx):
    """A curve that rises faster for the 'good' sampler and for as3l_* algorithms."""
    calls.append(ctx.dir.parent.name)
    conf = ctx.params["usb"]
    rate = (3.0 if "good" in str(ctx.inputs["select"].dir) else 1.0) * \
        (2.0 if conf["algorithm"].startswith("as3l") else 1.0)
    its = np.arange(10, conf["num_train_iter"] + 1, 10)
    acc = 0.9 * (1 - np.exp(-rate * its / conf["num_train_iter"]))
    (ctx.dir / pl.SAVE_NAME).mkdir(exist_ok=True)
    atomic_write_csv(ctx.dir / pl.SAVE_NAME / pl.METRICS, ["iteration", "algorithm", "eval_acc"],
                     [[i, conf["algorithm"], f"{a:.5f}"] for i, a in zip(its, acc)])
    return {"best_acc": float(acc.max()), "best_it": int(its[acc.argmax()]),
            "final_acc": float(acc[-1]), "num_train_iter": conf["num_train_iter"],
            "algorithm": conf["algorithm"]}


calls = []


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    for name in ("stage_pretrain", "stage_features", "stage_finetune"):
        monkeypatch.setattr(pl, name, _fake_feature)
    monkeypatch.setattr(pl, "stage_select", _fake_select)
    monkeypatch.setattr(pl, "stage_prior", _fake_prior)
    monkeypatch.setattr(pl, "stage_train", _fake_train)
    calls.clear()
    base = tmp_path / "base.yaml"
    base.write_text("algorithm: flexmatch\nnum_classes: 10\nnum_train_iter: 100\n"
                    "num_eval_iter: 10\n")
    return {"dataset": "digits", "seeds": [0, 1], "labels_per_class": [1],
            "samplers": {"good": {}, "random": {}},
            "propagators": {"seeded_kmeans": {}},
            "algorithms": {"flexmatch": {"config": str(base)},
                           "as3l_remove": {"config": str(base), "algorithm": "as3l_flexmatch",
                                           "prior_mode": "remove"}},
            "priority": [["good", "as3l_remove"]],
            "quick": {"seeds": [0], "samplers": ["good"], "algorithms": ["as3l_remove"]}}


# --------------------------------------------------------------------------- unit tests
def test_plan_cells_priority_then_seed_major(fakes):
    cfg = bn.load_bench_config(fakes)
    cells = bn.plan_cells(cfg, 10)
    assert len(cells) == 2 * 2 * 2
    assert [c["cell"] for c in cells[:2]] == ["good-as3l_remove-b10-s0", "good-as3l_remove-b10-s1"]
    assert [c["seed"] for c in cells[2:]] == [0, 0, 0, 1, 1, 1]
    assert len({c["cell"] for c in cells}) == len(cells)
    q = bn.load_bench_config(fakes, quick=True)
    assert [c["cell"] for c in bn.plan_cells(q, 10)] == ["good-as3l_remove-b10-s0"]


def test_config_errors(fakes):
    with pytest.raises(ConfigError, match="unknown key"):
        bn.load_bench_config({**fakes, "sampler": "as3l"})
    with pytest.raises(ConfigError, match="not in the full grid"):
        bn.load_bench_config({**fakes, "quick": {"samplers": ["nope"]}}, quick=True)
    with pytest.raises(ConfigError, match="set by the bench"):
        bn.load_bench_config({**fakes, "algorithms": {"x": {**fakes["algorithms"]["flexmatch"],
                                                               "seed": 3}}})


@pytest.mark.parametrize("ds", ["digits", "fashion_mnist"])
def test_shipped_bench_configs(ds):
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "usb_configs" / ds / "bench.yaml"
    full = bn.load_bench_config(path)
    assert set(full["samplers"]) == {"as3l", "random", "kmedoids", "coreset", "typiclust",
                                     "probcover", "stratified"}
    assert set(full["algorithms"]) == {"flexmatch", "fixmatch", "as3l_remove", "as3l_update"}
    assert full["labels_per_class"] == [1, 4] and len(full["seeds"]) >= 3
    cells = bn.plan_cells(full, 10)
    assert len(cells) == 7 * 4 * 2 * len(full["seeds"])
    assert (cells[0]["sampler"], cells[0]["algorithm"]) == ("random", "flexmatch")
    confs = {a: bn.Bench(full, "unused").usb_conf(a) for a in full["algorithms"]}
    assert len({c["num_train_iter"] for c in confs.values()}) == 1  # equal iterations
    assert {c["prior_mode"] for a, c in confs.items() if a.startswith("as3l")} == {"remove",
                                                                                  "update"}
    quick = bn.load_bench_config(path, quick=True)
    assert 1 <= len(bn.plan_cells(quick, 10)) <= 4


@pytest.mark.parametrize("name", ["digits/bench_1perclass", "digits/bench_4perclass",
                                  "fashion_mnist/bench_reduced"])
def test_shipped_partial_bench_configs(name):
    """The budget-split digits benches are bench.yaml's grid for one budget, with the same
    USB schedule; the reduced Fashion-MNIST bench holds the issue's three target cells."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "usb_configs"
    cfg = bn.load_bench_config(root / f"{name}.yaml")
    ds = name.split("/")[0]
    full = bn.load_bench_config(root / ds / "bench.yaml")
    cells = bn.plan_cells(cfg, 10)
    first = {(c["sampler"], c["algorithm"]) for c in cells[:len(cfg["priority"])]}
    assert ("random", "flexmatch") in first and len(cfg["seeds"]) >= 3
    confs = {a: bn.Bench(cfg, "unused").usb_conf(a) for a in cfg["algorithms"]}
    assert len({c["num_train_iter"] for c in confs.values()}) == 1
    if ds == "digits":
        assert len(cfg["labels_per_class"]) == 1
        assert cfg["labels_per_class"][0] in full["labels_per_class"]
        assert cfg["seeds"] == full["seeds"] and cfg["samplers"] == full["samplers"]
        assert confs == {a: bn.Bench(full, "unused").usb_conf(a) for a in full["algorithms"]}
    else:
        assert {"as3l", "random", "typiclust"} <= set(cfg["samplers"])
        assert cfg["labels_per_class"] == [1] and len(cells) >= 9


def test_shipped_finetune_k_ablation_pairs_with_bench_yaml():
    """The K = budget ablation differs from bench.yaml only in fine-tuning K (and a smaller
    grid), so its cells pair with bench.yaml's cells of the same name."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "usb_configs" / "digits"
    abl = bn.load_bench_config(root / "bench_finetune_k_budget.yaml")
    full = bn.load_bench_config(root / "bench.yaml")
    assert "k" not in abl["finetune"] and full["finetune"]["k"] == 50
    assert abl["finetune"] == {k: v for k, v in full["finetune"].items() if k != "k"}
    for key in ("seeds", "labels_per_class", "pretrain", "features", "net", "select_features",
                "prior_features"):
        assert abl[key] == full[key], key
    assert set(abl["samplers"]) <= set(full["samplers"])
    for a in abl["algorithms"]:
        assert bn.Bench(abl, "unused").usb_conf(a) == bn.Bench(full, "unused").usb_conf(a)
    assert bn.plan_cells(abl, 10)[0]["cell"] == "as3l-as3l_update-b10-s0"


@pytest.mark.parametrize("name,lpc,variant", [
    ("bench_as3l_density", [1, 4], {"as3l_density": {"sampler": "as3l", "variant": "density"}}),
    ("bench_probcover_k10", [4], {"probcover_k10": {"sampler": "probcover", "n_clusters": 10}}),
])
def test_shipped_variant_benches_pair_with_bench_yaml(name, lpc, variant):
    """The sampler-variant benches run one variant in bench.yaml's exact setting (seeds,
    pretraining, fine-tuning, USB schedule), so their cells pair with bench.yaml's."""
    from pathlib import Path
    from as3l_plugin.selection import get_sampler
    root = Path(__file__).resolve().parents[1] / "usb_configs" / "digits"
    var = bn.load_bench_config(root / f"{name}.yaml")
    full = bn.load_bench_config(root / "bench.yaml")
    for key in ("seeds", "pretrain", "features", "finetune", "net", "select_features",
                "prior_features"):
        assert var[key] == full[key], key
    assert var["labels_per_class"] == lpc and set(lpc) <= set(full["labels_per_class"])
    assert var["samplers"] == variant
    (vname, params), = variant.items()
    get_sampler(params["sampler"], **{k: v for k, v in params.items() if k != "sampler"})
    for a in var["algorithms"]:
        assert bn.Bench(var, "unused").usb_conf(a) == bn.Bench(full, "unused").usb_conf(a)
    assert bn.plan_cells(var, 10)[0]["sampler"] == vname


@pytest.mark.parametrize("name,parent", [
    ("digits/bench_prior_uniform", "digits/bench"),
    ("fashion_mnist/bench_long_prior_uniform", "fashion_mnist/bench_long_confirm"),
])
def test_shipped_prior_uniform_benches(name, parent):
    """The prior-calibration benches train as3l_flexmatch `remove` on the default prior and on
    `uncovered: uniform`, everything else as in the bench they are run beside, on seeds that
    bench does not use."""
    from pathlib import Path
    from as3l_plugin.propagation import get_propagator
    root = Path(__file__).resolve().parents[1] / "usb_configs"
    cfg = bn.load_bench_config(root / f"{name}.yaml")
    par = bn.load_bench_config(root / f"{parent}.yaml")
    for key in ("pretrain", "features", "finetune", "net", "select_features", "prior_features",
                "pretrain_seed"):
        assert cfg[key] == par[key], key
    assert not set(cfg["seeds"]) & set(par["seeds"])
    assert cfg["propagators"] == {"seeded_kmeans": {}, "seeded_kmeans_uniform": {
        "propagator": "seeded_kmeans", "uncovered": "uniform"}}
    get_propagator("seeded_kmeans", uncovered="uniform")
    b, bp = bn.Bench(cfg, "unused"), bn.Bench(par, "unused")
    assert b.usb_conf("as3l_remove_uniform") == b.usb_conf("as3l_remove") == \
        bp.usb_conf("as3l_remove")
    assert (b.train_prior("as3l_remove"), b.train_prior("as3l_remove_uniform")) == \
        ("seeded_kmeans", "seeded_kmeans_uniform")
    cells = bn.plan_cells(cfg, 10)
    assert [(c["algorithm"], c["seed"]) for c in cells[:2]] == \
        [("as3l_remove_uniform", cfg["seeds"][0]), ("as3l_remove", cfg["seeds"][0])]


@pytest.mark.parametrize("name,parent,cal,seed0,T,short", [
    ("fashion_mnist/bench_long_prior_T", "fashion_mnist/bench_long_confirm",
     "fashion_mnist/bench_long_prior_uniform", 0, 900, 300),
    ("digits/bench_prior_T", "digits/bench", "digits/bench_prior_uniform", 10, 150, 50),
])
def test_shipped_prior_T_benches(name, parent, cal, seed0, T, short):
    """A prior_T bench differs from the bench it is run beside only in the prior's length
    (as3l_remove_t<short>) and the no-prior cell on AS3L's labels; its default-T cell is the
    calibration bench's as3l_remove cell (same USB config), on the same seeds, which the
    parent bench does not use."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "usb_configs"
    cfg = bn.load_bench_config(root / f"{name}.yaml")
    par = bn.load_bench_config(root / f"{parent}.yaml")
    cal = bn.load_bench_config(root / f"{cal}.yaml")
    for key in ("pretrain", "features", "finetune", "net", "select_features", "prior_features",
                "pretrain_seed"):
        assert cfg[key] == par[key] == cal[key], key
    assert cfg["propagators"] == {"seeded_kmeans": {}}
    assert cfg["seeds"] == cal["seeds"] and not set(cfg["seeds"]) & set(par["seeds"])
    assert cfg["labels_per_class"] == cal["labels_per_class"]
    b, bp, bc = (bn.Bench(c, "unused") for c in (cfg, par, cal))
    assert b.usb_conf("as3l_remove") == bp.usb_conf("as3l_remove") == bc.usb_conf("as3l_remove")
    assert b.usb_conf("flexmatch") == bp.usb_conf("flexmatch")
    t_short, t_def = b.usb_conf(f"as3l_remove_t{short}"), b.usb_conf("as3l_remove")
    assert t_def["prior_T"] == T and t_short == {**t_def, "prior_T": short}
    assert cfg["method"] == ("as3l", f"as3l_remove_t{short}")
    assert set(cfg["peers"]) == {("as3l", "as3l_remove"), ("as3l", "flexmatch")}
    assert [(c["algorithm"], c["seed"]) for c in bn.plan_cells(cfg, 10)[:3]] == \
        [(f"as3l_remove_t{short}", seed0), ("flexmatch", seed0), ("as3l_remove", seed0)]
    quick = bn.load_bench_config(root / f"{name}.yaml", quick=True)
    assert quick["method"] == ("as3l", f"as3l_remove_t{short}")
    assert quick["peers"] == [("as3l", "flexmatch")]


def test_shipped_confirm_4perclass_bench():
    """The 4-labels/class confirmation is the 1-label confirmation grid at 40 labels, on 3 of
    its seeds, with the reference, AS3L's cell and the best peer's, all else equal."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "usb_configs" / "fashion_mnist"
    cfg = bn.load_bench_config(root / "bench_long_confirm_4perclass.yaml")
    par = bn.load_bench_config(root / "bench_long_confirm.yaml")
    for key in ("pretrain", "features", "net", "select_features", "prior_features",
                "pretrain_seed", "propagators", "reference", "method", "dataset"):
        assert cfg[key] == par[key], key
    assert cfg["labels_per_class"] == [4] and par["labels_per_class"] == [1]
    assert len(cfg["seeds"]) == 3 and set(cfg["seeds"]) <= set(par["seeds"])
    assert {s: par["samplers"][s] for s in cfg["samplers"]} == cfg["samplers"]
    b, bp = bn.Bench(cfg, "unused"), bn.Bench(par, "unused")
    for a in cfg["algorithms"]:
        assert b.usb_conf(a) == bp.usb_conf(a), a
    cells = bn.plan_cells(cfg, 10)
    assert {c["budget"] for c in cells} == {40}
    # the two cells that decide the 4-label target first, then the reference, then the two
    # that split AS3L's result into labels and prior (each set with and without the prior)
    assert [(c["sampler"], c["algorithm"]) for c in cells[:5]] == [
        ("as3l", "as3l_remove"), ("typiclust", "flexmatch"), ("random", "flexmatch"),
        ("as3l", "flexmatch"), ("typiclust", "as3l_remove")]
    assert [tuple(p) for p in cfg["priority"][:3]] == [
        tuple(cfg["method"]), ("typiclust", "flexmatch"), tuple(cfg["reference"])]


@pytest.mark.parametrize("name", ["bench_long_confirm", "bench_long_confirm_4perclass"])
def test_frozen_confirm_copies_match_the_configs(name):
    """The confirmation cells run on the frozen confirmation code with a copy of the config
    (docs/results/fashion_mnist_long_confirm/): the same grid, less the report-only keys that
    code does not know."""
    import yaml
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / "usb_configs" / "fashion_mnist" / f"{name}.yaml").read_text())
    frozen = yaml.safe_load((root / "docs" / "results" / "fashion_mnist_long_confirm"
                             / f"{name}_frozen.yaml").read_text())
    report_only = {"method", "peers", "prior_effect"}
    assert {"method", "prior_effect"} <= set(cfg) and not report_only & set(frozen)
    assert frozen == {k: v for k, v in cfg.items() if k not in report_only}


def test_confirm_priority_runs_the_prior_on_a_peers_labels_before_the_far_peers():
    """The 1-label confirmation's priority since 2026-12-07: typiclust + as3l_remove before
    probcover and freematch; seed 5's six cells run first; the 4 × 3 × 5 cells are distinct."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "usb_configs" / "fashion_mnist"
    cfg = bn.load_bench_config(root / "bench_long_confirm.yaml")
    cells = bn.plan_cells(cfg, 10)
    assert [tuple(p) for p in cfg["priority"]] == [
        ("random", "flexmatch"), ("as3l", "as3l_remove"), ("typiclust", "flexmatch"),
        ("typiclust", "as3l_remove"), ("probcover_k10", "flexmatch"), ("random", "freematch")]
    assert [(c["sampler"], c["algorithm"]) for c in cells[:6]] == cfg["priority"]
    assert len({c["cell"] for c in cells}) == len(cells) == 4 * 3 * 5


def test_upsert_row_replaces_by_key(tmp_path):
    p = tmp_path / "t.csv"
    bn.upsert_row(p, ["a", "b"], {"a": 1, "b": 2}, keys=("a",))
    bn.upsert_row(p, ["a", "b"], {"a": 2, "b": 3}, keys=("a",))
    bn.upsert_row(p, ["a", "b"], {"a": 1, "b": 5}, keys=("a",))
    assert bn.read_rows(p) == [{"a": "2", "b": "3"}, {"a": "1", "b": "5"}]


@pytest.mark.slow
def test_bench_resumes_skips_done_cells_and_writes_tables(fakes, tmp_path):
    out = tmp_path / "bench"
    res = bn.run_bench(fakes, out=out, max_cells=3, log=quiet)
    assert res["ran"] == 3 and len(calls) == 3
    assert len(bn.read_rows(out / bn.CELLS_CSV)) == 3
    res = bn.run_bench(fakes, out=out, log=quiet)  # the remaining 5, none twice
    assert res["ran"] == 5 and len(calls) == 8 and len(set(calls)) == 8
    res = bn.run_bench(fakes, out=out, log=quiet)
    assert res["ran"] == 0 and len(calls) == 8
    rows = bn.read_rows(out / bn.CELLS_CSV)
    assert len(rows) == 8
    text = (out / bn.TABLES_MD).read_text()
    for t in ("Table 1a", "Table 1b", "Table 1c", "Table 2", "Table 4/5", "Class coverage",
              "Table 6"):
        assert t in text
    # Table 1c: accuracy at 10% of the 100 iterations, i.e. the fake curves at iteration 10
    t1c = text.split("## Table 1c")[1].split("## Table 2")[0]
    good = next(l for l in t1c.splitlines() if l.startswith("| good |")).split("|")
    rand = next(l for l in t1c.splitlines() if l.startswith("| random |")).split("|")
    assert good[3].strip() == f"{90 * (1 - np.exp(-0.6)):.1f} ± 0.0"   # as3l_remove, rate 6
    assert rand[2].strip() == f"{90 * (1 - np.exp(-0.1)):.1f} ± 0.0"   # flexmatch, rate 1
    # good + as3l_remove rises 6x faster than random + flexmatch: reaches its final accuracy
    # early; the reference itself needs all its iterations (speed-up 1.00)
    t2 = text.split("## Table 2")[1].split("## Table 4")[0]
    line = next(l for l in t2.splitlines() if l.startswith("| good + as3l_remove"))
    its = float(line.split("|")[2].split("±")[0])
    assert 0 < its < 40
    assert 100 / its == pytest.approx(float(line.split("|")[3].split("×")[0]))
    rand = next(l for l in t2.splitlines() if l.startswith("| random + as3l_remove"))
    assert float(rand.split("|")[2].split("±")[0]) > its  # the same algorithm, worse labels
    assert "| random + flexmatch" not in t2  # the reference itself
    # a changed setting re-runs exactly the cells it touches
    fakes["algorithms"]["flexmatch"]["lr"] = 0.01
    res = bn.run_bench(fakes, out=out, log=quiet)
    assert res["ran"] == 4
    assert list((out / "plots").glob("*.png"))


def test_method_and_peers_config(fakes):
    cfg = bn.load_bench_config({**fakes, "method": ["good", "as3l_remove"]})
    assert cfg["method"] == ("good", "as3l_remove")
    assert cfg["peers"] == [("random", "flexmatch")]      # shares neither sampler nor algorithm
    cfg = bn.load_bench_config({**fakes, "method": ["good", "as3l_remove"],
                                "peers": [["random", "flexmatch"], ["good", "flexmatch"]]})
    assert cfg["peers"] == [("random", "flexmatch"), ("good", "flexmatch")]
    assert bn.load_bench_config(fakes)["method"] is None
    one = {**fakes, "samplers": {"good": {}}, "priority": []}
    for bad, field in (({"method": ["good"]}, "method"),
                       ({"method": ["nope", "flexmatch"]}, "method"),
                       ({"method": ["random", "flexmatch"]}, "method"),   # the reference
                       ({"method": ["good", "as3l_remove"], "peers": [["good", "nope"]]},
                        "peers[0]"),
                       ({"method": ["good", "as3l_remove"], "peers": [["good", "as3l_remove"]]},
                        "peers"),
                       ({"method": ["good", "as3l_remove"], "peers": []}, "peers"),
                       ({"method": ["good", "as3l_remove"], "peers": "good"}, "peers"),
                       ({"peers": [["random", "flexmatch"]]}, "peers"),
                       ({**one, "method": ["good", "as3l_remove"]}, "peers")):  # none left
        with pytest.raises(ConfigError) as ei:
            bn.load_bench_config({**fakes, **bad})
        assert ei.value.field == field
    with pytest.raises(ConfigError, match="unknown key"):      # the full grid's setting only
        bn.load_bench_config({**fakes, "quick": {"method": ["good", "as3l_remove"]}}, quick=True)
    # a quick grid keeps the full grid's pairs it has; no table without the method or a peer
    two = {**fakes, "method": ["good", "as3l_remove"],
           "peers": [["random", "flexmatch"], ["good", "flexmatch"]]}
    q = bn.load_bench_config({**two, "quick": {"seeds": [0], "samplers": ["good"],
                                                "algorithms": ["as3l_remove", "flexmatch"]}},
                             quick=True)
    assert q["method"] == ("good", "as3l_remove") and q["peers"] == [("good", "flexmatch")]
    for quick in ({"samplers": ["good"], "algorithms": ["as3l_remove"]},      # no peer left
                  {"samplers": ["random"], "algorithms": ["flexmatch"]}):     # no method
        q = bn.load_bench_config({**two, "quick": quick}, quick=True)
        assert q["method"] is None and q["peers"] is None
        assert bn._targets_table(q, {}, bn._Curves(None)) == []


def test_status_reads_the_cells_and_writes_nothing(fakes, tmp_path, capsys):
    """``as3l bench --status``: done cells from cells.csv, a cell being trained from its
    metrics.csv (last evaluation, best, checkpoint), the rest not started; whether a process
    holds the lock; nothing written (not even the lock file)."""
    import yaml
    from as3l_plugin.cli import run as cli
    from as3l_plugin.stages import LOCK_FILE, RUNNING_FILE, run_lock
    cfg_path = tmp_path / "bench.yaml"
    cfg_path.write_text(yaml.safe_dump(fakes))
    out = tmp_path / "b"
    b = bn.open_bench(cfg_path, out=out, seeds=[1], log=quiet)
    assert b.cfg["seeds"] == [1]
    ids = [c["cell"] for c in bn.plan_cells(b.cfg, 10)]
    out.mkdir()
    bn.upsert_row(out / bn.CELLS_CSV, bn.CELL_COLUMNS,
                  {"cell": ids[0], "num_train_iter": 100, "last_it": 100,
                   "final_acc": "0.5", "best_acc": "0.6"}, keys=("cell",))
    train = out / "cells" / ids[1] / "train" / pl.SAVE_NAME
    train.mkdir(parents=True)
    atomic_write_csv(train / pl.METRICS, ["iteration", "algorithm", "eval_acc"],
                     [[10, "x", 0.3], [20, "x", 0.25]])
    (train / "latest_model.pth").write_bytes(b"")
    (out / "cells" / ids[2] / "train").mkdir(parents=True)     # started, no evaluation yet
    (out / "cells" / ids[2] / "train" / RUNNING_FILE).write_text("{}")
    (out / "cells" / ids[3] / "train").mkdir(parents=True)     # a directory, nothing begun
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    st = {r["cell"]: r for r in b.status()}
    assert [r["cell"] for r in b.status()] == ids
    assert (st[ids[0]]["state"], st[ids[0]]["iteration"], st[ids[0]]["acc"],
            st[ids[0]]["best"]) == ("done", 100, 0.5, 0.6)
    assert (st[ids[1]]["state"], st[ids[1]]["iteration"], st[ids[1]]["num_train_iter"],
            st[ids[1]]["acc"], st[ids[1]]["best"], st[ids[1]]["checkpoint"]) == (
        "training", 20, 100, 0.25, 0.3, True)
    assert st[ids[2]]["state"] == "started" and st[ids[2]]["iteration"] is None
    assert st[ids[3]]["state"] == "pending" and not st[ids[3]]["checkpoint"]
    text = b.status_text()
    assert (f"1 of {len(ids)} cells done, 1 training, 1 started (no evaluation yet), "
            f"{len(ids) - 3} not started; no process") in text
    assert f"| {ids[2]} | started |  |  |  |" in text
    assert f"| {ids[1]} | training (checkpoint) | 20/100 | 25.0 | 30.0 |" in text
    assert f"| {ids[0]} | done | 100/100 | 50.0 | 60.0 |" in text
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert not (out / LOCK_FILE).exists()
    with run_lock(out):
        assert "; a process is writing it now" in b.status_text()
    assert "no process is writing it" in b.status_text()
    # the CLI: prints the same, exit 0; with a writing option or no directory: exit 2
    assert cli(["bench", "--config", str(cfg_path), "--out", str(out), "--seeds", "1",
                "--status"])[0] == 0
    assert f"| {ids[1]} | training (checkpoint) | 20/100 |" in capsys.readouterr().out
    rc, exc = cli(["bench", "--config", str(cfg_path), "--out", str(out), "--status",
                   "--max-cells", "1"])
    assert rc == 2 and exc.field == "--status"
    rc, exc = cli(["bench", "--config", str(cfg_path), "--out", str(tmp_path / "none"),
                   "--status"])
    assert rc == 2 and "none" in str(exc) and not (tmp_path / "none").exists()
    rc, exc = cli(["bench", "--config", str(cfg_path), "--out", str(tmp_path), "--status"])
    assert rc == 2 and "not a bench directory" in str(exc)     # a directory, not a bench's


def test_prior_effect_config(fakes):
    cfg = bn.load_bench_config({**fakes, "prior_effect": ["flexmatch", "as3l_remove"]})
    assert cfg["prior_effect"] == ("flexmatch", "as3l_remove")
    assert bn.load_bench_config(fakes)["prior_effect"] is None
    for bad in (["flexmatch"], ["flexmatch", "nope"], ["flexmatch", "flexmatch"], "flexmatch",
                ["flexmatch", "as3l_remove", "flexmatch"],
                ["as3l_remove", "flexmatch"]):      # the prior's side first: the sign flipped
        with pytest.raises(ConfigError) as ei:
            bn.load_bench_config({**fakes, "prior_effect": bad})
        assert ei.value.field == "prior_effect"
    with pytest.raises(ConfigError, match="unknown key"):      # the full grid's setting only
        bn.load_bench_config({**fakes, "quick": {"prior_effect": ["flexmatch", "as3l_remove"]}},
                             quick=True)
    # the fixture's quick grid has as3l_remove only: no pair left, no Table 1f
    q = bn.load_bench_config({**fakes, "prior_effect": ["flexmatch", "as3l_remove"]}, quick=True)
    assert q["prior_effect"] is None and bn._prior_effect_table(q, {}, bn._Curves(None)) == []
    q = bn.load_bench_config({**fakes, "prior_effect": ["flexmatch", "as3l_remove"],
                              "quick": {"algorithms": ["flexmatch", "as3l_remove"]}}, quick=True)
    assert q["prior_effect"] == ("flexmatch", "as3l_remove")


def test_prior_effect_table_pairs_the_same_labeled_set(tmp_path):
    """Table 1f: with-prior minus without on the same sampler, budget and seed; a seed with one
    of the two cells is blank and left out of the summary, a non-number is "–"; a sampler
    with no pair has no row; the end-of-run and early columns use the curves."""
    cfg = {"seeds": [0, 1, 2, 3], "labels_per_class": [1], "reference": ["r", "F"],
           "samplers": {"m": {}, "t": {}, "r": {}}, "algorithms": {"F": {}, "A": {}},
           "prior_effect": ("F", "A")}
    spec = {("m", "F", 0): 0.60, ("m", "A", 0): 0.65, ("m", "F", 1): 0.70, ("m", "A", 1): 0.62,
            ("m", "F", 2): 0.50,                                   # seed 2: no m + A cell
            ("m", "F", 3): "nan", ("m", "A", 3): 0.60,
            ("t", "A", 0): 0.50,                                   # t: never both
            ("r", "F", 1): 0.40, ("r", "A", 1): 0.45}
    by = _rows(spec)
    for (s, a, sd), acc in {("r", "F", 1): [0.1, 0.2, 0.3, 0.4, 0.4],
                            ("r", "A", 1): [0.3, 0.4, 0.4, 0.5, 0.45]}.items():
        atomic_write_csv(tmp_path / f"{s}-{a}-{sd}.csv", ["iteration", "algorithm", "eval_acc"],
                         [[20 * (i + 1), a, v] for i, v in enumerate(acc)])
    text = "\n".join(bn._prior_effect_table(cfg, by, bn._Curves(tmp_path)))
    assert "## Table 1f. The prior on the same labels: A − F (points)" in text
    rows = [l for l in text.splitlines() if l.startswith("| ")]
    assert rows[0].startswith("| sampler | labels/cls | seed 0 | seed 1 | seed 2 | seed 3 | "
                              "final: mean | prior ahead |")
    # m: +5.0 and -8.0 (seed 2 unpaired, seed 3 not a number: 2 of the 3 paired seeds count);
    # no curves: none of the 3 for the end-of-run and early columns
    assert rows[1] == ("| m | 1 | +5.0 | -8.0 |  | – | -1.5 ± 9.2 (2/3) | 1 of 2 | – (0/3) "
                       "| – (0/3) |")
    # r: one seed; end of run = mean from iteration 80 (0.475 vs 0.40), early: iteration 20
    assert rows[2] == "| r | 1 |  | +5.0 |  |  | +5.0 ± 0.0 | 1 of 1 | +7.5 ± 0.0 | +20.0 ± 0.0 |"
    assert len(rows) == 3 and "| t |" not in text
    none = bn._prior_effect_table(cfg, _rows({("t", "A", 0): 0.5}), bn._Curves(None))
    assert none[-1].startswith("(needs a F and a A cell")


def _rows(spec):
    """Hand-made cells.csv rows: {(sampler, algorithm, seed): final accuracy}."""
    return {(s, a, 1, sd): {"sampler": s, "algorithm": a, "labels_per_class": "1",
                            "seed": str(sd), "final_acc": str(v), "best_acc": str(v),
                            "num_train_iter": "100", "metrics": f"{s}-{a}-{sd}.csv",
                            "wall_s": "60", "cpu_s": "60"}
            for (s, a, sd), v in spec.items()}


def test_targets_table_on_hand_made_rows(tmp_path):
    """Seeds differ, one peer cell and one curve are missing, one value is not a number: the
    best peer is the best on the seeds every peer shares (like for like), the difference is
    per seed, the summary counts only finite differences, and a missing curve is not 'not
    reached'."""
    cfg = {"seeds": [0, 1, 2, 3], "labels_per_class": [1], "reference": ["r", "F"],
           "samplers": {"m": {}, "p": {}, "q": {}, "r": {}, "z": {}},
           "algorithms": {"A": {}, "F": {}},
           "method": ("m", "A"), "peers": [("z", "F"), ("p", "F"), ("q", "F")]}
    spec = {("m", "A", 0): 0.70, ("m", "A", 1): 0.50, ("m", "A", 2): 0.62, ("m", "A", 3): 0.64,
            ("p", "F", 0): 0.60, ("p", "F", 1): 0.55, ("p", "F", 2): "nan", ("p", "F", 3): 0.60,
            ("z", "F", 0): 0.50, ("z", "F", 1): 0.50, ("z", "F", 2): 0.40, ("z", "F", 3): 0.40,
            ("r", "F", 0): 0.55, ("r", "F", 1): 0.55, ("r", "F", 2): 0.55}
    by = _rows(spec)
    curves = {0: [0.2, 0.56, 0.7], 1: [0.2, 0.3, 0.5], 3: [0.6, 0.6, 0.64]}  # seed 2: none
    for sd, acc in curves.items():
        atomic_write_csv(tmp_path / f"m-A-{sd}.csv", ["iteration", "algorithm", "eval_acc"],
                         [[10 * (i + 1), "A", a] for i, a in enumerate(acc)])
    text = "\n".join(bn._targets_table(cfg, by, bn._Curves(tmp_path)))
    # z has 4 seeds, p 3 finite (its seed 2 is nan): on the shared 0, 1, 3 p is ahead
    assert ("shares with the method (0, 1, 3), which ranks them: p + F 58.3, z + F 46.7; "
            "on all the seeds each has paired with the method (their number): "
            "p + F 58.3 (3), z + F 45.0 (4); best: **p + F**") in text
    table = [l for l in text.splitlines() if l.startswith("| ")][1:]   # below the header
    assert table[0] == "| 0 | 70.0 | 60.0 | +10.0 | 20 of 100 (0.20) |"
    assert table[1] == "| 1 | 50.0 | 55.0 | -5.0 | not reached |"   # 0.5 < the ref's 0.55
    assert table[2] == "| 2 | 62.0 | – | – | – |"                  # nan peer; no curve
    assert table[3] == "| 3 | 64.0 | 60.0 | +4.0 | – |"              # no reference cell
    assert table[4] == ("| all |  |  | +3.0 ± 7.5; ahead on 2 of 3 | "
                        "not reached on some seed |")
    # a peer on one seed only, far ahead there: the one shared seed ranks them all
    text = "\n".join(bn._targets_table(cfg, _rows({**spec, ("q", "F", 0): 0.90}),
                                       bn._Curves(None)))
    assert ("(0), which ranks them: q + F 90.0, p + F 60.0, z + F 50.0; on all the seeds "
            "each has paired with the method (their number): q + F 90.0 (1), p + F 58.3 (3), "
            "z + F 45.0 (4); best: **q + F**") in text
    # no seed shared: the peer on the most seeds, then the higher mean
    text = "\n".join(bn._targets_table(cfg, _rows({**{k: v for k, v in spec.items() if k[0] == "m"},
                                                   ("z", "F", 0): 0.5, ("p", "F", 1): 0.55}),
                                       bn._Curves(None)))
    assert ("the peers share no seed with each other and the method; mean final accuracy on "
            "the seeds each has paired with it (their number): p + F 55.0 (1), z + F 50.0 (1); "
            "best: **p + F**") in text
    # behind on every seed: a negative mean, none ahead; nan rows drop out of the summary
    by2 = _rows({("m", "A", 0): 0.40, ("m", "A", 1): 0.30, ("m", "A", 2): "nan",
                 ("z", "F", 0): 0.50, ("z", "F", 1): 0.50, ("z", "F", 2): 0.50})
    text = "\n".join(bn._targets_table(cfg, by2, bn._Curves(None)))
    assert "| 2 | – | 50.0 | – | – |" in text
    assert "| all |  |  | -15.0 ± 7.1; ahead on 0 of 2 | – |" in text
    # per-seed table: the pairs with a cell, their values per seed, blanks where none
    t1d = "\n".join(bn._per_seed_table(cfg, by2))
    assert "| labels/cls | seed | m + A | z + F |" in t1d
    assert "| 1 | 2 | – (–) | 50.0 (50.0) |" in t1d and "| 1 | 3 |" not in t1d
    assert bn._targets_table(cfg, _rows({("m", "A", 0): 0.4}), bn._Curves(None))[-1].startswith("(needs")


def test_end_of_run_mean_in_table_1e_and_the_targets(tmp_path):
    """Table 1e averages the evaluations from 80% of the iterations on; the targets section
    pairs that end-of-run mean by seed, beside the final accuracy (which one late evaluation
    can swing: here the method ends below the peer on seed 0 but is ahead at the end of the
    run on both seeds)."""
    cfg = {"name": "t", "dataset": "digits", "net": "cnn4", "seeds": [0, 1],
           "labels_per_class": [1], "reference": ["r", "F"], "samplers": {"m": {}, "z": {}, "r": {}},
           "algorithms": {"A": {}, "F": {}}, "propagators": {"P": {}},
           "method": ("m", "A"), "peers": [("z", "F")]}
    curves = {("m", "A", 0): [0.1, 0.5, 0.7, 0.7, 0.4], ("m", "A", 1): [0.1, 0.5, 0.6, 0.6, 0.6],
              ("z", "F", 0): [0.1, 0.5, 0.5, 0.5, 0.5], ("z", "F", 1): [0.1, 0.5, 0.5, 0.6, 0.5],
              ("r", "F", 0): [0.1, 0.2, 0.3, 0.3, 0.3], ("r", "F", 1): [0.1, 0.2, 0.3, 0.3, 0.3]}
    for (sm, a, sd), acc in curves.items():          # iterations 20, 40, ..., 100 of 100
        atomic_write_csv(tmp_path / f"{sm}-{a}-{sd}.csv", ["iteration", "algorithm", "eval_acc"],
                         [[20 * (i + 1), a, v] for i, v in enumerate(acc)])
    rows = list(_rows({k: v[-1] for k, v in curves.items()}).values())
    text = bn.bench_tables(cfg, rows, [], planned=6, out=tmp_path)
    t1e = text.split("## Table 1e")[1].split("## ")[0]
    # from iteration 80 on: m 55.0 and 60.0 -> 57.5 ± 3.5; z 50.0 and 55.0 -> 52.5 ± 3.5
    assert "| m | 57.5 ± 3.5 |  |" in t1e and "| z |  | 52.5 ± 3.5 |" in t1e
    tt = text.split("## Targets")[1].split("## ")[0]
    assert "| all |  |  | +0.0 ± 14.1; ahead on 1 of 2 |" in tt        # finals: -10, +10
    assert ("method − best peer: +5.0 ± 0.0 points; ahead on 2 of 2 seeds." in tt)
    # without the curves there is neither Table 1e nor the end-of-run line
    text = bn.bench_tables(cfg, rows, [], planned=6)
    assert "Table 1e" not in text and "End of the run" not in text


def test_a_report_reads_each_curve_once(tmp_path, monkeypatch):
    """Tables 1c, 1e, 2, the targets and the plots all use the cells' curves: one read of each
    ``metrics.csv`` per report, a missing file is tried once and counts as no curve."""
    cfg = {"name": "t", "dataset": "digits", "net": "cnn4", "seeds": [0, 1],
           "labels_per_class": [1], "reference": ["r", "F"], "samplers": {"m": {}, "z": {}, "r": {}},
           "algorithms": {"A": {}, "F": {}}, "propagators": {"P": {}},
           "method": ("m", "A"), "peers": [("z", "F")], "priority": [["m", "A"], ["z", "F"]]}
    finals = {("m", "A", 0): 0.7, ("m", "A", 1): 0.6, ("z", "F", 0): 0.5, ("z", "F", 1): 0.5,
              ("r", "F", 0): 0.3, ("r", "F", 1): 0.3}
    for (sm, a, sd), v in finals.items():
        if (sm, a, sd) != ("z", "F", 1):                   # one curve missing
            atomic_write_csv(tmp_path / f"{sm}-{a}-{sd}.csv", ["iteration", "algorithm", "eval_acc"],
                             [[50, a, 0.2], [100, a, v]])
    rows = list(_rows(finals).values())
    reads = []
    real = rp.read_metrics
    monkeypatch.setattr(rp, "read_metrics", lambda path: reads.append(Path(path).name) or real(path))
    curves = bn._Curves(tmp_path)
    text = bn.bench_tables(cfg, rows, [], planned=6, out=tmp_path, curves=curves)
    plots = bn.bench_plots(cfg, rows, tmp_path, curves=curves)
    assert "## Table 1e" in text and "## Targets" in text and plots
    assert sorted(reads) == sorted(r["metrics"] for r in rows)      # each once, z-F-1 included
    assert curves({"metrics": "z-F-1.csv"}) is None and bn._Curves(None)(rows[0]) is None


def test_report_counts_only_the_config_grid():
    """Rows merged from a wider bench (another sampler, seed or propagator) are left out of
    every table and counted once in the header."""
    cfg = {"name": "t", "dataset": "digits", "net": "cnn4", "seeds": [0, 1],
           "labels_per_class": [1], "reference": ["r", "F"], "samplers": {"m": {}, "r": {}},
           "algorithms": {"A": {}, "F": {}}, "propagators": {"P": {}}, "method": None}
    rows = list(_rows({("m", "A", 0): 0.7, ("m", "A", 1): 0.5, ("r", "F", 0): 0.4,
                       ("x", "F", 0): 0.9, ("m", "A", 7): 0.1}).values())
    prior = {"labels_per_class": "1", "coverage": "10", "prior_acc": "0.5", "ece": "0.1"}
    priors = [dict(prior, sampler="m", propagator="P", seed="0"),
              dict(prior, sampler="m", propagator="Q", seed="0", prior_acc="0.9"),
              dict(prior, sampler="m", propagator="P", seed="5", prior_acc="0.1")]
    text = bn.bench_tables(cfg, rows, priors, planned=8)
    assert "3 of 8 cells done (2 finished cell(s) outside this grid left out)" in text
    assert "| m | 60.0 ± 14.1 |  |" in text                 # seed 7's 10% left out
    assert "x" not in text.split("## Table 1a")[1].split("## Table 1b")[0]
    t4 = text.split("## Table 4/5")[1].split("##")[0]
    assert "| sampler | P @1/cls |" in t4 and "| m | 50.0 ± 0.0 |" in t4   # no Q, no seed 5


def test_compute_line_marks_unknown_cpu_time():
    """A cell whose CPU time is unknown (``nan`` in cells.csv: resumed from a metrics file
    without the column) is left out of the per-cell CPU mean, and the line says over how many
    cells it is taken; with none known it says so rather than print ``nan``."""
    cfg = {"name": "t", "dataset": "digits", "net": "cnn4", "seeds": [0, 1, 2],
           "labels_per_class": [1], "reference": ["r", "F"], "samplers": {"m": {}, "r": {}},
           "algorithms": {"A": {}, "F": {}}, "propagators": {"P": {}}, "method": None}
    rows = list(_rows({("m", "A", 0): 0.7, ("m", "A", 1): 0.5, ("r", "F", 0): 0.4}).values())
    rows[0]["cpu_s"], rows[1]["cpu_s"] = "nan", "120"
    line = next(l for l in bn.bench_tables(cfg, rows, [], planned=6).splitlines()
                if l.startswith("Compute:"))
    assert "3 cells" in line and "nan" not in line
    assert "(over the 2 cells where it is known)" in line
    for r in rows:
        r["cpu_s"] = "nan"
    line = next(l for l in bn.bench_tables(cfg, rows, [], planned=6).splitlines()
                if l.startswith("Compute:"))
    assert "CPU time unknown" in line and "nan" not in line


@pytest.mark.slow
def test_targets_table_pairs_the_method_with_the_best_peer(fakes, tmp_path):
    """The tables from a bench run: Table 1d lists every finished cell per seed; the targets
    table picks the best peer, pairs it with the method by seed and reads the reach of the
    reference's final accuracy from the method's curve on disk."""
    out = tmp_path / "b"
    cfg = {**fakes, "method": ["good", "as3l_remove"],
           "peers": [["good", "flexmatch"], ["random", "flexmatch"]]}
    text = bn.run_bench(cfg, out=out, log=quiet)["text"]
    final = lambda rate: 90 * (1 - np.exp(-rate))           # noqa: E731  fake curves at it 100
    t1d = text.split("## Table 1d")[1].split("## ")[0]
    row = next(l for l in t1d.splitlines() if l.startswith("| 1 | 1 |")).split("|")
    header = next(l for l in t1d.splitlines() if l.startswith("| labels/cls")).split("|")
    col = [h.strip() for h in header].index("random + as3l_remove")
    assert row[col].strip() == f"{final(2):.1f} ({final(2):.1f})"
    tt = text.split("## Targets")[1].split("## ")[0]
    # good + flexmatch (rate 3) beats random + flexmatch (rate 1): it is the best peer
    assert f"good + flexmatch {final(3):.1f} (2)" in tt and "best: **good + flexmatch**" in tt
    assert tt.count(f"| {final(6):.1f} | {final(3):.1f} | {final(6) - final(3):+.1f} |") == 2
    # the method (rate 6) reaches the reference's final 0.9 (1 - e^-1) at 6 t >= 1: iteration 20
    assert tt.count("| 20 of 100 (0.20) |") == 2
    assert f"+{final(6) - final(3):.1f} ± 0.0; ahead on 2 of 2" in tt
    assert "largest fraction 0.20 (2 seeds)" in tt
    # without method: no such section
    assert "## Targets" not in bn.run_bench(fakes, out=out, log=quiet)["text"]


@pytest.mark.slow
def test_merge_split_benches_into_one_report(fakes, tmp_path):
    """Two processes ran one seed each (as bench_{1,4}perclass split a grid): --merge gives
    the full grid's tables, the curves are read where they are, and a run of the full config
    in the merged directory finds nothing left to do."""
    parts = []
    for seed in (0, 1):
        d = tmp_path / f"part{seed}"
        bn.run_bench({**fakes, "seeds": [seed]}, out=d, log=quiet)
        parts.append(d)
    assert len(calls) == 8
    out = tmp_path / "merged"
    res = bn.run_bench(fakes, out=out, merge=parts, log=quiet)
    assert len(bn.read_rows(out / bn.CELLS_CSV)) == 8
    assert len(bn.read_rows(out / bn.PRIORS_CSV)) == 4  # 2 samplers x 2 seeds x 1 propagator
    assert "8 of 8 cells done" in res["text"]
    t2 = res["text"].split("## Table 2")[1].split("## Table 4")[0]
    line = next(l for l in t2.splitlines() if l.startswith("| good + as3l_remove"))
    assert "(" not in line.split("|")[2]  # reached in both seeds: the curves were found
    assert sorted(p.name for p in (out / "plots").glob("*.png"))
    assert bn.run_bench(fakes, out=out, log=quiet)["ran"] == 0 and len(calls) == 8
    # merging again (or the same source twice) changes nothing
    before = (out / bn.CELLS_CSV).read_text()
    bn.run_bench(fakes, out=out, merge=parts + parts[:1], log=quiet)
    assert sorted(before.splitlines()) == sorted((out / bn.CELLS_CSV).read_text().splitlines())


@pytest.mark.slow
def test_seeds_option_runs_a_subset(fakes, tmp_path):
    res = bn.run_bench(fakes, out=tmp_path / "s1", seeds=[1], log=quiet)
    assert res["cells"] == 4 and res["ran"] == 4
    assert {r["seed"] for r in bn.read_rows(tmp_path / "s1" / bn.CELLS_CSV)} == {"1"}
    for bad in ([], [1, 1], [-1]):
        with pytest.raises(ConfigError, match="--seeds"):
            bn.run_bench(fakes, out=tmp_path / "s2", seeds=bad, log=quiet)
    assert not (tmp_path / "s2").exists()


@pytest.mark.slow
def test_pretrain_seed_shares_one_model_across_seeds_and_bench_dirs(fakes, tmp_path,
                                                                    monkeypatch):
    """`pretrain_seed: P`: one pretrain -> features for every seed, under
    shared/pretrain_seed<P>; a copy of it in another bench directory is a cache hit."""
    import shutil
    pre = []
    orig = _fake_feature

    def counting(ctx):
        if ctx.name == "pretrain":
            pre.append(ctx.params["seed"])
        return orig(ctx)
    monkeypatch.setattr(pl, "stage_pretrain", counting)
    cfg = {**fakes, "pretrain_seed": 7, "algorithms": {"flexmatch": fakes["algorithms"]["flexmatch"]}}
    a, b = tmp_path / "a", tmp_path / "b"
    bn.run_bench(cfg, out=a, seeds=[0], log=quiet)
    assert pre == [7] and (a / "shared" / "pretrain_seed7" / "pretrain").is_dir()
    assert not (a / "shared" / "seed0" / "pretrain").exists()
    (b / "shared").mkdir(parents=True)
    shutil.copytree(a / "shared" / "pretrain_seed7", b / "shared" / "pretrain_seed7")
    bn.run_bench(cfg, out=b, seeds=[1], log=quiet)
    assert pre == [7]                      # seed 1 reused the copied model
    bn.run_bench({**cfg, "pretrain_seed": None}, out=b, seeds=[1], log=quiet)
    assert pre == [7, 1]                   # default: one model per seed
    for bad in (-1, "0", True):
        with pytest.raises(ConfigError, match="pretrain_seed"):
            bn.load_bench_config({**cfg, "pretrain_seed": bad})


@pytest.mark.slow
def test_sampler_variant_under_its_own_name(fakes, tmp_path):
    """`alias: {sampler: good}` selects with the registered `good` under the name `alias`:
    same labeled set as `good`, its own stage folder, cells and table rows."""
    cfg = {**fakes, "seeds": [0], "samplers": {"good": {}, "alias": {"sampler": "good"}},
           "algorithms": {"flexmatch": fakes["algorithms"]["flexmatch"]}}
    out = tmp_path / "b"
    bn.run_bench(cfg, out=out, log=quiet)
    rows = {r["sampler"]: r for r in bn.read_rows(out / bn.CELLS_CSV)}
    assert set(rows) == {"good", "alias"}
    assert rows["alias"]["coverage"] == "10"  # good's one-per-class set, not a random one
    idx = [np.load(out / "labels" / "seed0" / f"{s}_b10" / "select" / index_filename(10, 0))
           for s in ("good", "alias")]
    np.testing.assert_array_equal(*idx)
    assert "| alias |" in (out / bn.TABLES_MD).read_text()
    with pytest.raises(ConfigError, match="samplers.alias.sampler"):
        bn.load_bench_config({**cfg, "samplers": {"alias": {"sampler": 3}}})


def test_propagator_variant_and_the_prior_an_algorithm_trains_with(fakes, tmp_path,
                                                                   monkeypatch):
    """`flat: {propagator: seeded_kmeans, uncovered: uniform}` makes a second prior per labeled
    set with the registered propagator and those params; an algorithm's `prior: flat` trains
    on it and reports its accuracy, the others keep the first propagator's."""
    seen = []

    def prior(ctx):
        seen.append((ctx.name, ctx.params["propagator"], dict(ctx.params["params"])))
        from as3l_plugin.datasets import load_dataset
        y = load_dataset("digits").y_train
        lab = pl._read_labels(ctx.inputs["labels"])
        P = np.full((len(y), 10), 0.05, dtype=np.float32)
        right = np.arange(len(y)) % (2 if ctx.params["params"] else 4) == 0  # 50% vs 25% right
        P[np.arange(len(y)), np.where(right, y, (y + 1) % 10)] = 0.55
        write_with_sidecar(ctx.dir / pl.PRIOR, P, {})
        return pl.prior_diagnostics(P, y, lab[:, 0], 10)
    monkeypatch.setattr(pl, "stage_prior", prior)
    trained_on = {}

    def train(ctx):
        trained_on[ctx.dir.parent.name] = ctx.inputs["prior"].dir.name \
            if "prior" in ctx.inputs else None
        return _fake_train(ctx)
    monkeypatch.setattr(pl, "stage_train", train)
    alg = fakes["algorithms"]
    cfg = {**fakes, "seeds": [0], "samplers": {"good": {}},
           "propagators": {"seeded_kmeans": {},
                           "flat": {"propagator": "seeded_kmeans", "uncovered": "uniform"}},
           "algorithms": {"flexmatch": alg["flexmatch"], "as3l_remove": alg["as3l_remove"],
                          "as3l_flat": {**alg["as3l_remove"], "prior": "flat"}},
           "priority": []}
    out = tmp_path / "b"
    bn.run_bench(cfg, out=out, log=quiet)
    assert sorted(seen) == [("prior_flat", "seeded_kmeans", {"uncovered": "uniform"}),
                            ("prior_seeded_kmeans", "seeded_kmeans", {})]
    assert trained_on == {"good-as3l_remove-b10-s0": "prior_seeded_kmeans",
                          "good-as3l_flat-b10-s0": "prior_flat",
                          "good-flexmatch-b10-s0": None}
    rows = {r["algorithm"]: r for r in bn.read_rows(out / bn.CELLS_CSV)}
    assert {a: round(float(r["prior_acc"]), 2) for a, r in rows.items()} == \
        {"flexmatch": 0.25, "as3l_remove": 0.25, "as3l_flat": 0.5}
    usb = bn.Bench(bn.load_bench_config(cfg), out, log=quiet).usb_conf("as3l_flat")
    assert "prior" not in usb and usb["prior_mode"] == "remove"
    with pytest.raises(ConfigError, match="algorithms.as3l_flat.prior"):
        bn.load_bench_config({**cfg, "algorithms": {"as3l_flat": {**alg["as3l_remove"],
                                                                  "prior": "nope"}}})
    with pytest.raises(ConfigError, match="propagators.flat.propagator"):
        bn.load_bench_config({**cfg, "propagators": {"flat": {"propagator": 3}}})


@pytest.mark.slow
def test_merge_refuses_what_it_cannot_merge(fakes, tmp_path):
    part = tmp_path / "part"
    bn.run_bench({**fakes, "seeds": [0]}, out=part, log=quiet)
    from as3l_plugin.errors import InputError
    with pytest.raises(InputError, match="not a bench directory") as ei:
        bn.run_bench(fakes, out=tmp_path / "m", merge=[tmp_path / "nothing"], log=quiet)
    assert "nothing" in str(ei.value)
    with pytest.raises(InputError, match="output directory itself"):
        bn.run_bench(fakes, out=part, merge=[part], log=quiet)
    other = tmp_path / "other"
    bn.run_bench({**fakes, "seeds": [0], "algorithms": {
        "flexmatch": {**fakes["algorithms"]["flexmatch"], "lr": 0.01}}}, out=other, log=quiet)
    with pytest.raises(ConfigError, match="another run") as ei:
        bn.run_bench(fakes, out=tmp_path / "m", merge=[part, other], log=quiet)
    assert "good-flexmatch-b10-s0" in str(ei.value) or "random-flexmatch-b10-s0" in str(ei.value)
    rows = bn.read_rows(part / bn.CELLS_CSV)
    for r in rows:
        r["dataset"] = "fashion_mnist"
    atomic_write_csv(part / bn.CELLS_CSV, bn.CELL_COLUMNS,
                     ([r[c] for c in bn.CELL_COLUMNS] for r in rows))
    with pytest.raises(ConfigError, match="fashion_mnist") as ei:
        bn.run_bench(fakes, out=tmp_path / "m2", merge=[part], log=quiet)
    assert "cells.csv" in str(ei.value)
    assert not (tmp_path / "m2" / bn.CELLS_CSV).exists()


def test_report_helpers():
    c = (np.array([10, 20, 30]), np.array([0.2, 0.6, 0.5]))
    assert rp.final_accuracy(c) == 0.5
    assert rp.best_accuracy(c) == (0.6, 20)
    assert rp.iterations_to_reach(c, 0.55) == 20
    assert rp.iterations_to_reach(c, 0.7) is None
    assert rp.accuracy_at(c, 15) == 0.6 and rp.accuracy_at(c, 10) == 0.2
    assert np.isnan(rp.accuracy_at(c, 31))
    assert rp.mean_accuracy_from(c, 15) == pytest.approx(0.55)   # iterations 20 and 30
    assert rp.mean_accuracy_from(c, 30) == 0.5 and np.isnan(rp.mean_accuracy_from(c, 31))
    assert rp.speedup(30, 10) == 3.0 and np.isnan(rp.speedup(30, None))
    assert rp.mean_std([0.5, 0.7], scale=100) == "60.0 ± 14.1"
    assert rp.mean_std([1.0, float("nan")], digits=0) == "1 ± 0 (1/2)"
    assert rp.mean_std([]) == "–"
    t = rp.markdown_table(["a", "b"], [["x", 1], ["y", None]])
    assert t.splitlines()[1] == "|:---|---:|" and "| y | – |" in t


def _usb_log(cms):
    """A USB log.txt: one evaluation record per matrix, as USB's evaluate() writes them."""
    out = ["[2026-12-06 04:37:25,188 INFO] Model training"]
    for i, cm in enumerate(cms):
        out += [f"[2026-12-06 05:4{i}:28,311 INFO] confusion matrix:", np.array_str(cm),
                f"[2026-12-06 05:4{i}:28,361 INFO] {i} iteration, USE_EMA: True"]
    return "\n".join(out) + "\n"


def test_final_confusion_reads_the_last_logged_matrix(tmp_path):
    rng = np.random.default_rng(0)
    first, last = (rng.dirichlet(np.ones(10), size=10) for _ in range(2))
    log = tmp_path / "log.txt"
    log.write_text(_usb_log([first, last]))
    got = rp.final_confusion(log, 10)
    np.testing.assert_allclose(got, last, atol=5e-4)   # array_str prints 3 decimals here
    assert rp.final_confusion(log, 9) is None            # not 9 x 9 numbers
    log.write_text(_usb_log([np.eye(3)]) + "[2026-12-06 06:00:00,000 INFO] done\n")
    np.testing.assert_array_equal(rp.final_confusion(log, 3), np.eye(3))
    big = np.full((40, 40), 1 / 40)                       # summarised by NumPy: '...'
    log.write_text(_usb_log([big]))
    assert rp.final_confusion(log, 40) is None
    assert rp.final_confusion(tmp_path / "missing.txt", 3) is None
    log.write_text("[2026-12-06 04:37:25,188 INFO] Model training\n")
    assert rp.final_confusion(log, 3) is None


def test_bench_table_3_per_class_accuracy_from_the_usb_logs(fakes, tmp_path, monkeypatch):
    """Table 3 averages the diagonals of each cell's last logged confusion matrix over seeds,
    per sampler + algorithm, columns named by class."""
    def train(ctx):
        out = _fake_train(ctx)
        seed = ctx.params["managed"]["seed"]
        diag = np.full(10, 0.5)
        diag[2] = 0.1 * (seed + 1)                        # seeds 0, 1 -> mean 0.15
        cm = np.diag(diag) + (1 - diag)[:, None] * np.eye(10)[[(c + 1) % 10 for c in range(10)]]
        (ctx.dir / pl.SAVE_NAME / "log.txt").write_text(_usb_log([np.eye(10), cm]))
        return out
    monkeypatch.setattr(pl, "stage_train", train)
    out = tmp_path / "b"
    cfg = {**fakes, "samplers": {"good": {}},
           "algorithms": {"flexmatch": fakes["algorithms"]["flexmatch"]}, "priority": []}
    bn.run_bench(cfg, out=out, log=quiet)
    text = (out / bn.TABLES_MD).read_text()
    table = text.split("## Table 3.")[1].split("##")[0]
    assert "| sampler + algorithm | labels/cls | n | 0 | 1 | 2 |" in table
    assert "| good + flexmatch | 1 | 2 | 50.0 | 50.0 | 15.0 | 50.0 |" in table


def test_read_metrics_dedupes_resumed_rows(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("iteration,algorithm,eval_acc,eval_loss,time\n10,f,0.1,1,0\n20,f,0.2,1,0\n"
                 "20,f,0.25,1,0\n30,f,0.3,1,0\n")
    its, acc = rp.read_metrics(p)
    assert its.tolist() == [10, 20, 30] and acc.tolist() == [0.1, 0.25, 0.3]


# --------------------------------------------------------------------------- the real command
@pytest.mark.slow
def test_as3l_bench_quick_two_cells(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    digits = Path(__file__).resolve().parents[1] / "usb_configs" / "digits"
    cfg = {
        "name": "t", "dataset": "digits", "seeds": [0, 1], "labels_per_class": [1, 4],
        "samplers": {"as3l": {}, "random": {}, "typiclust": {}},
        "propagators": {"seeded_kmeans": {}, "knn": {}},
        "algorithms": {"flexmatch": {"config": str(digits / "flexmatch_lbidx_digits_10_0.yaml")}},
        "pretrain": {"epochs": 1}, "finetune": {"epochs": 2},
        "usb": {"num_train_iter": 20, "num_eval_iter": 10, "num_log_iter": 10, "batch_size": 8,
                "uratio": 1, "eval_batch_size": 512, "ema_m": 0.9},
        "quick": {"seeds": [0], "labels_per_class": [1], "samplers": ["as3l", "random"],
                  "propagators": ["seeded_kmeans"]},
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "as3l_plugin", "bench", "--config", str(path), "--quick",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rows = bn.read_rows(out / bn.CELLS_CSV)
    assert sorted(r_["cell"] for r_ in rows) == ["as3l-flexmatch-b10-s0", "random-flexmatch-b10-s0"]
    for r_ in rows:
        assert 0 <= float(r_["final_acc"]) <= 1 and r_["num_train_iter"] == "20"
        assert 1 <= int(r_["coverage"]) <= 10 and 0 < float(r_["prior_acc"]) <= 1
    text = (out / bn.TABLES_MD).read_text()
    assert "2 of 2 cells done" in text and text in r.stdout
    t1 = text.split("## Table 1a")[1].split("## Table 1b")[0]
    assert "| as3l |" in t1 and "| random |" in t1 and "±" in t1
    t2 = text.split("## Table 2")[1].split("## Table 4")[0]
    assert "| as3l + flexmatch |" in t2
    assert "seeded_kmeans @1/cls" in text and "knn" not in text
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "acc_1perclass_flexmatch.png", "acc_1perclass_key.png"]
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r2.returncode == 0 and "train: running" not in r2.stdout
    assert len(bn.read_rows(out / bn.CELLS_CSV)) == 2
