"""The plugin's train entry: config layering, CLI, metrics.csv, end-to-end run and exact resume."""

import argparse
import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("semilearn")

import as3l_plugin.usb  # noqa: E402,F401
from semilearn.core.hooks import Hook  # noqa: E402
from as3l_plugin.commands import train as train_cmd  # noqa: E402
from as3l_plugin.usb.hooks import METRICS_COLUMNS  # noqa: E402
from as3l_plugin.usb.train import build_algorithm, get_config, train  # noqa: E402

TINY = Path(__file__).with_name("usb_tiny.yaml")


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    from as3l_plugin.datasets import load_dataset
    y = load_dataset("digits").y_train
    p = np.full((len(y), 10), 0.02, np.float32)
    p[np.arange(len(y)), y] = 0.82
    path = tmp_path_factory.mktemp("prior") / "prior.npy"
    np.save(path, p)
    return str(path)


# --------------------------------------------------------------------------- config / CLI
def test_config_layers_defaults_yaml_cli_overrides(prior_file):
    args = get_config(TINY, argv=["--num_train_iter", "40", "--lr", "0.1", "--gpu", "cpu"],
                      lr=0.2, prior_file=prior_file)
    assert args.num_train_iter == 40        # CLI beats YAML (20)
    assert args.lr == 0.2                   # keyword override beats CLI
    assert args.batch_size == 8             # YAML beats the parser default
    assert args.eval_batch_size == 128 and args.num_warmup_iter == 0  # parser default kept
    assert args.gpu == "cpu" and args.lb_index_file is None and args.cpu_procs_per_node == 1
    assert args.prior_T == 10 and args.prior_file == prior_file
    assert get_config(TINY, argv=["--gpu", "None"]).gpu is None


def test_unknown_algorithm_lists_known_ones():
    from as3l_plugin.errors import ConfigError
    with pytest.raises(ConfigError, match="as3l_flexmatch"):
        get_config(TINY, algorithm="nomatch")


def test_cli_parser_knows_every_algorithm_flag():
    from semilearn.algorithms import name2alg
    from semilearn.imb_algorithms import name2imbalg
    names = {a.name.lstrip("-") for reg in (name2alg, name2imbalg) for k in reg.keys()
             for a in reg[k].get_argument()}
    assert names <= set(train_cmd.ALGORITHM_FLAGS)


def test_cli_flags_roundtrip_to_argv():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    train_cmd.register(sub)
    ns = p.parse_args(["train", "--c", "x.yaml", "--resume", "--world-size", "2",
                       "--prior_T", "5", "-nl", "40"])
    argv = train_cmd.usb_argv(ns.usb_flags)
    assert argv == ["--c", "x.yaml", "--resume", "--world-size", "2", "--prior_T", "5",
                    "--num_labels", "40"]
    assert ns.func is train_cmd._run_train


def test_cli_bad_config_is_one_line_error(tmp_path, capsys):
    from as3l_plugin.cli import main
    rc = main(["train", "--c", str(TINY), "--algorithm", "as3l_flexmatch",
               "--prior_file", str(tmp_path / "missing.npy"), "--save_dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("as3l: error:") and "prior_file" in err and "missing.npy" in err


# --------------------------------------------------------------------------- lb_index_file
@pytest.mark.parametrize("algorithm", ["fixmatch", "flexmatch", "freematch", "softmatch",
                                       "fullysupervised", "as3l_flexmatch"])
def test_lb_index_file_is_the_labeled_set_for_every_algorithm(tmp_path, prior_file, algorithm):
    from as3l_plugin.datasets import load_dataset
    ds = load_dataset("digits")
    lb = np.array([3, 99, 1000, 7, 512, 64, 8, 1400, 250, 777, 31, 42], dtype=np.int64)
    np.save(tmp_path / "lb.npy", lb)
    args = get_config(TINY, algorithm=algorithm, num_labels=12, save_dir=str(tmp_path),
                      lb_index_file=str(tmp_path / "lb.npy"), prior_file=prior_file, gpu="cpu",
                      shared=True)  # one tiny config for every algorithm
    d = build_algorithm(args).dataset_dict
    np.testing.assert_array_equal(d["train_lb"].orig_index, lb)
    np.testing.assert_array_equal(d["train_lb"].data, ds.x_train[lb])
    np.testing.assert_array_equal(d["train_lb"].targets, ds.y_train[lb])


# --------------------------------------------------------------------------- end to end
class _Snapshot(Hook):
    """Copies latest_model.pth when `at` iterations are done (after USB's CheckpointHook)."""

    def __init__(self, at, dst):
        self.at, self.dst = at, dst

    def after_train_step(self, algorithm):
        if algorithm.it + 1 == self.at:
            shutil.copy(os.path.join(algorithm.save_dir, algorithm.save_name, "latest_model.pth"),
                        self.dst)


@pytest.mark.slow
def test_as3l_flexmatch_digits_end_to_end_and_exact_resume(tmp_path, prior_file):
    """20 iterations, update mode (T=10, refresh every 5): a run resumed from the checkpoint at
    iteration 10 (an epoch end) ends bit for bit where the continuous run ends."""
    common = dict(save_dir=str(tmp_path), prior_file=prior_file, gpu="cpu")
    snap = str(tmp_path / "it10.pth")
    a = train(TINY, save_name="cont", hooks=[(_Snapshot(10, snap), "LOWEST")], **common)
    assert set(a) >= {"best_acc", "best_it", "final_acc", "save_dir", "metrics_csv"}
    assert a["final_it"] == 20 and 0.0 <= a["final_acc"] <= 1.0 and a["best_acc"] >= a["final_acc"] - 1e-6
    assert a["save_dir"] == str(tmp_path / "cont")
    with open(a["metrics_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == METRICS_COLUMNS
    assert [int(r["iteration"]) for r in rows] == [10, 20]
    assert all(r["algorithm"] == "as3l_flexmatch" for r in rows)
    assert 0 < float(rows[0]["train_time_s"]) < float(rows[1]["train_time_s"])
    assert 0 < float(rows[0]["cpu_time_s"]) < float(rows[1]["cpu_time_s"])
    assert (a["resumed_wall_s"], a["resumed_cpu_s"]) == (0.0, 0.0)  # a fresh run
    assert float(rows[1]["eval_acc"]) == pytest.approx(a["final_acc"], abs=1e-6)

    ck = torch.load(snap, map_location="cpu")
    assert ck["it"] == 10 and ck["as3l_prior"]["version"] == 0  # refreshes come at it 10, 15

    # the resumed run continues the metrics file it finds, its times counting on from the
    # kept row's (large stand-in values, so that a counter restarted at 0 shows)
    os.makedirs(tmp_path / "resumed")
    with open(tmp_path / "resumed" / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, METRICS_COLUMNS)
        w.writeheader()
        w.writerow({**rows[0], "wall_time_s": "1000000.000", "cpu_time_s": "2000000.000"})
    b = train(TINY, save_name="resumed", resume=True, load_path=snap, **common)
    assert (b["resumed_wall_s"], b["resumed_cpu_s"]) == (1e6, 2e6)
    with open(b["metrics_csv"], newline="") as fh:
        rb = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rb] == [10, 20]
    assert 1e6 < float(rb[1]["wall_time_s"]) < 1e6 + 600
    assert 2e6 < float(rb[1]["cpu_time_s"]) < 2e6 + 600
    # a file written before the cpu_time_s column existed: the CPU time is unknown
    os.makedirs(tmp_path / "resumed_old")
    with open(tmp_path / "resumed_old" / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, [c for c in METRICS_COLUMNS if c != "cpu_time_s"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerow({**rows[0], "wall_time_s": "1000000.000"})
    c = train(TINY, save_name="resumed_old", resume=True, load_path=snap, **common)
    assert c["resumed_wall_s"] == 1e6 and c["resumed_cpu_s"] is None
    with open(c["metrics_csv"], newline="") as fh:
        assert [r["cpu_time_s"] for r in csv.DictReader(fh)] == ["", ""]
    A = torch.load(tmp_path / "cont" / "latest_model.pth", map_location="cpu")
    B = torch.load(tmp_path / "resumed" / "latest_model.pth", map_location="cpu")
    for key in ("model", "ema_model"):
        for name, value in A[key].items():
            assert torch.equal(value, B[key][name]), f"{key}.{name} differs after resume"
    assert A["it"] == B["it"]
    assert A["as3l_prior"]["version"] == B["as3l_prior"]["version"] == 2
    assert A["as3l_prior"]["last_update_it"] == B["as3l_prior"]["last_update_it"] == 15
    assert torch.equal(A["as3l_prior"]["prior"], B["as3l_prior"]["prior"])
    assert torch.equal(A["selected_label"], B["selected_label"])
    assert b["final_acc"] == a["final_acc"]


@pytest.mark.slow
def test_resume_in_place_keeps_metrics_rows(tmp_path, prior_file):
    common = dict(save_dir=str(tmp_path), save_name="run", prior_file=prior_file, gpu="cpu",
                  prior_mode="remove", num_train_iter=8, num_eval_iter=4, epoch=2)
    train(TINY, **common)
    ck = str(tmp_path / "run" / "latest_model.pth")
    shutil.copy(ck, tmp_path / "end.pth")
    res = train(TINY, resume=True, load_path=str(tmp_path / "end.pth"), **common)
    with open(res["metrics_csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rows] == [4, 8]  # nothing re-run, nothing lost


# --------------------------------------------------------------------------- pretrained encoder
@pytest.mark.parametrize("net", ["cnn4", "wrn_28_2"])
def test_pretrain_path_loads_encoder_not_classifier(tmp_path, net):
    """The feature stage's contract: {'model': backbone_state_dict} + use_pretrain."""
    from as3l_plugin.usb.train import build_model
    src = build_model(TINY, net=net, use_pretrain=False)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(1.0)
    state = {"module." + k: v for k, v in src.state_dict().items()}  # DDP-style prefix too
    torch.save({"model": state}, tmp_path / "encoder.pth")
    torch.manual_seed(123)
    dst = build_model(TINY, net=net, use_pretrain=True, pretrain_path=str(tmp_path / "encoder.pth"))
    for name, value in dst.state_dict().items():
        same = torch.equal(value, src.state_dict()[name])
        assert same != name.startswith("classifier") or "num_batches" in name, name
