"""Config files (issue 18): the kind of file each command takes, unknown keys (did you mean),
the defaults USB would silently train with, and every shipped config passing with no warning.

Nothing here trains: the CLI cases stop at an error before training, or at a stub of
:func:`as3l_plugin.usb.train.main`."""

from __future__ import annotations

import inspect
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from as3l_plugin import config as C
from as3l_plugin.errors import ConfigError, ConfigWarning

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "usb_configs"
DIGITS = CONFIGS / "digits"
SHIPPED = sorted(CONFIGS.glob("*/*.yaml"))
TRAIN_YAML = DIGITS / "flexmatch_digits_10_0.yaml"        # USB's random split
AS3L_YAML = DIGITS / "as3l_flexmatch_digits_10_0.yaml"
RUN_YAML = DIGITS / "pipeline.yaml"
BENCH_YAML = DIGITS / "bench.yaml"


@pytest.fixture(scope="module")
def usb():
    pytest.importorskip("semilearn")
    import as3l_plugin.usb
    return as3l_plugin.usb


def _cli(argv, cwd, monkeypatch, capsys):
    """``as3l ARGV`` in ``cwd``: (exit code, stderr lines, files changed under cwd)."""
    import bad_inputs as ts
    from as3l_plugin.cli import run
    monkeypatch.chdir(cwd)
    before = ts.snapshot(Path("."))
    capsys.readouterr()
    try:
        code, _ = run([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err, ts.snapshot(Path(".")) != before


def _edit(src: Path, dst: Path, drop=(), **keys) -> Path:
    """``src`` (read with the project's reader) minus ``drop``, plus ``keys``, as ``dst``."""
    data = {k: v for k, v in C.read_yaml(src).items() if k not in drop}
    data.update(keys)
    dst.write_text(yaml.safe_dump(data, sort_keys=False))
    return dst


# =========================================================================== reading
def test_read_yaml_types_duplicates_and_bad_files(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("weight_decay: 5e-4\nlr: 3.0e-2\ngpu: None\nload_path: null\nn: 10\n")
    d = C.read_yaml(p)
    assert d == {"weight_decay": 5e-4, "lr": 0.03, "gpu": "None", "load_path": None, "n": 10}
    assert isinstance(d["weight_decay"], float)
    p.write_text("lr: 0.1\nnet: cnn4\nlr: 0.2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: lr: appears twice \(lines 1 and 3\); "
                                          r"keep one$"):
        C.read_yaml(p)
    p.write_text("finetune:\n  k: 1\n  k: 2\n")
    with pytest.raises(ConfigError, match="k: appears twice"):
        C.read_yaml(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of config keys, got list"):
        C.read_yaml(p)
    p.write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        C.read_yaml(p)
    with pytest.raises(ConfigError, match="nope.yaml: c: config file not found"):
        C.read_yaml(tmp_path / "nope.yaml", field="c")
    p.write_text("")
    assert C.read_yaml(p) == {}


def test_config_module_is_below_the_cli():
    src = (ROOT / "as3l_plugin" / "config.py").read_text()
    assert "commands" not in "".join(ln for ln in src.splitlines() if "import" in ln)
    from as3l_plugin.commands import train as cmd
    assert cmd.USB_ARGS is C.USB_ARGS and cmd.PLUGIN_ARGS is C.PLUGIN_ARGS


# =========================================================================== kinds
@pytest.mark.parametrize("path,kind", [(TRAIN_YAML, "train"), (AS3L_YAML, "train"),
                                       (RUN_YAML, "run"), (BENCH_YAML, "bench"),
                                       (CONFIGS / "fashion_mnist" / "bench_reduced.yaml", "bench")])
def test_detect_kind(path, kind):
    assert C.detect_kind(C.read_yaml(path)) == kind
    assert C.detect_kind({}) is None


COMMANDS = {"train": ["train", "--c"], "run": ["run", "--config"],
            "bench": ["bench", "--config"]}
FILES = {"train": TRAIN_YAML, "run": RUN_YAML, "bench": BENCH_YAML}
KIND_TEXT = {"train": "a USB training config", "run": "an as3l run config",
             "bench": "an as3l bench config"}


@pytest.mark.parametrize("command,kind", [(c, k) for c in COMMANDS for k in FILES if c != k])
def test_each_command_refuses_the_other_kinds(command, kind, tmp_path, monkeypatch, capsys):
    f = tmp_path / f"my_{kind}.yaml"
    shutil.copy(FILES[kind], f)
    code, err, changed = _cli(COMMANDS[command] + [f.name], tmp_path, monkeypatch, capsys)
    assert code == 2
    assert err == [f"as3l: error: {f.name}: this is {KIND_TEXT[kind]}, not "
                   f"{KIND_TEXT[command]}; run `as3l {' '.join(COMMANDS[kind])} {f.name}`"]
    assert not changed


# =========================================================================== training keys
@pytest.mark.parametrize("key,value,hint", [
    ("prior_TT", 100, "prior_T"), ("prior_mod", "update", "prior_mode"),
    ("lb_index_fle", "lb.npy", "lb_index_file"), ("prior_fil", "p.npy", "prior_file"),
    ("p_cutof", 0.9, "p_cutoff"),          # one edit away from a key of the algorithm
    ("num_label", 10, "num_labels"),       # ... or of USB's
])
def test_misspelt_key_is_an_error_with_the_closest_key(key, value, hint, tmp_path, usb):
    from as3l_plugin.usb.train import get_config
    f = _edit(AS3L_YAML, tmp_path / "t.yaml", **{key: value})
    with pytest.raises(ConfigError) as ei:
        get_config(str(f))
    assert str(ei.value) == f"{f}: {key}: unknown key; did you mean {hint}?"


def test_unknown_plugin_key_without_a_close_match_lists_the_plugin_keys(usb):
    from as3l_plugin.usb.train import get_config
    with pytest.raises(ConfigError, match=r"^prior_zzzzzzzzzz: unknown key; the plugin's keys "
                                          r"are lb_index_file, lb_labels_file, channels, "
                                          r"skip_bad_images, flip, cpu_procs_per_node, "
                                          r"cpu_bf16, prior_file, prior_T"):
        get_config(C.read_yaml(AS3L_YAML), prior_zzzzzzzzzz=1)


def test_misspelt_key_on_the_command_line(tmp_path, monkeypatch, capsys, usb):
    f = _edit(AS3L_YAML, tmp_path / "t.yaml", prior_TT=100)
    code, err, changed = _cli(["train", "--c", "t.yaml"], tmp_path, monkeypatch, capsys)
    assert (code, err, changed) == (2, ["as3l: error: t.yaml: prior_TT: unknown key; did you "
                                        "mean prior_T?"], False)


def _stub_training(monkeypatch):
    """``as3l train`` up to the training: records the args main() got."""
    from as3l_plugin.usb import train as ut
    seen = []

    def main(args, hooks=()):
        seen.append(args)
        return {"best_acc": 0.0, "best_it": 0, "final_acc": 0.0, "save_dir": "x"}
    monkeypatch.setattr(ut, "main", main)
    return seen


def test_other_unknown_key_is_one_warning_line_or_an_error_with_strict(tmp_path, monkeypatch,
                                                                       capsys, usb):
    _edit(TRAIN_YAML, tmp_path / "t.yaml", foo_bar=1)
    seen = _stub_training(monkeypatch)
    code, err, _ = _cli(["train", "--c", "t.yaml"], tmp_path, monkeypatch, capsys)
    assert code == 0 and len(seen) == 1 and seen[0].foo_bar == 1
    assert err == ["warning: t.yaml: foo_bar: unknown key, ignored by USB and the plugin "
                   "(--strict: an error)"]
    code, err, changed = _cli(["train", "--c", "t.yaml", "--strict"], tmp_path, monkeypatch,
                              capsys)
    assert (code, changed, len(seen)) == (2, False, 1)
    assert err == ["as3l: error: t.yaml: foo_bar: unknown key, ignored by USB and the plugin "
                   "(--strict)"]


def test_key_of_another_algorithm_is_a_warning(tmp_path, usb):
    from as3l_plugin.usb.train import get_config
    f = _edit(TRAIN_YAML, tmp_path / "t.yaml", vat_eps=6.0)
    lines = []
    get_config(str(f), warn=lines.append)
    assert lines == [f"{f}: vat_eps: is not a key of algorithm flexmatch (other USB algorithms "
                     "read it); it is ignored (--strict: an error)"]
    with pytest.warns(ConfigWarning, match="vat_eps: is not a key of algorithm flexmatch"):
        get_config(str(f))
    with pytest.raises(ConfigError, match="vat_eps: is not a key of algorithm flexmatch"):
        get_config(str(f), strict=True)
    # the trainings of as3l run / bench share blocks between algorithms: not reported
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_config(str(f), shared=True, strict=True)


def test_keyword_overrides_are_checked_too(usb):
    from as3l_plugin.usb.train import get_config
    with pytest.raises(ConfigError, match="^prior_TT: unknown key; did you mean prior_T"):
        get_config(C.read_yaml(AS3L_YAML), prior_TT=5)


# =========================================================================== silent defaults
@pytest.mark.parametrize("key", C.TRAIN_REQUIRED)
def test_required_training_keys(key, tmp_path, monkeypatch, capsys, usb):
    default = {d: v for _, d, _, v, _ in C.USB_ARGS}[key]
    _edit(TRAIN_YAML, tmp_path / "t.yaml", drop=(key,))
    code, err, changed = _cli(["train", "--c", "t.yaml"], tmp_path, monkeypatch, capsys)
    assert (code, changed) == (2, False)
    assert err == [f"as3l: error: t.yaml: {key}: is not set: USB would silently use its "
                   f"default {key}={default!r}; set {key}"]


def test_required_key_given_on_the_command_line_is_enough(tmp_path, monkeypatch, capsys, usb):
    _edit(TRAIN_YAML, tmp_path / "t.yaml", drop=("num_classes",))
    seen = _stub_training(monkeypatch)
    code, err, _ = _cli(["train", "--c", "t.yaml", "--num_classes", "10"], tmp_path,
                        monkeypatch, capsys)
    assert (code, err, seen[0].num_classes) == (0, [], 10)


def test_num_classes_must_match_the_dataset(tmp_path, monkeypatch, capsys, usb):
    _edit(TRAIN_YAML, tmp_path / "t.yaml", num_classes=5, save_dir="runs")
    code, err, changed = _cli(["train", "--c", "t.yaml"], tmp_path, monkeypatch, capsys)
    assert (code, changed) == (2, False)
    assert err == ["as3l: error: t.yaml: num_classes: num_classes=5 but digits has 10 classes; "
                   "set num_classes: 10"]


def test_num_classes_of_usb_datasets(usb):
    from as3l_plugin.usb import checks
    from as3l_plugin.usb.train import get_config
    args = get_config(str(CONFIGS / "cifar100" / "flexmatch_cifar100_200_0.yaml"),
                      num_classes=10)
    with pytest.raises(ConfigError, match="num_classes=10 but cifar100 has 100 classes"):
        checks.check_run_inputs(args)


@pytest.mark.parametrize("algorithm", ["mixmatch", "pseudolabel", "meanteacher"])
def test_lb_index_file_with_an_algorithm_that_ignores_it(algorithm, tmp_path, monkeypatch,
                                                         capsys, usb):
    _edit(DIGITS / "flexmatch_lbidx_digits_10_0.yaml", tmp_path / "t.yaml", drop=(
        "hard_label", "T", "thresh_warmup", "p_cutoff"), algorithm=algorithm)
    code, err, changed = _cli(["train", "--c", "t.yaml"], tmp_path, monkeypatch, capsys)
    assert (code, changed) == (2, False)
    assert err == [f"as3l: error: t.yaml: lb_index_file: algorithm {algorithm} ignores it (the "
                   "plugin applies it to fixmatch, flexmatch, freematch, softmatch, "
                   "fullysupervised, supervised, as3l_flexmatch); remove lb_index_file or use "
                   "one of those"]


def test_lb_index_algorithms_are_registered(usb):
    from semilearn.algorithms import name2alg
    assert set(C.LB_INDEX_ALGORITHMS) <= set(name2alg.keys())


# =========================================================================== run / bench
@pytest.mark.parametrize("src,edit,path,message", [
    (RUN_YAML, {"finetune": {"kk": 50}}, "finetune.kk", "unknown key; did you mean k?"),
    (RUN_YAML, {"pretrain": {"epochs": 1, "objectiv": "simclr"}}, "pretrain.objectiv",
     "unknown key; did you mean objective?"),
    (RUN_YAML, {"select": {"sampler": "as3l", "param": {}}}, "select.param",
     "unknown key; did you mean params?"),
    (RUN_YAML, {"as3l_flexmatch": {"config": "as3l_flexmatch_digits_10_0.yaml",
                                   "prior_TT": 5}}, "as3l_flexmatch.prior_TT",
     "unknown key; did you mean prior_T?"),
    (RUN_YAML, {"usb": {"num_train_iters": 5}}, "usb.num_train_iters",
     "unknown key; did you mean num_train_iter?"),
    (RUN_YAML, {"seeed": 1}, "seeed", "unknown key; did you mean seed?"),
    (BENCH_YAML, {"finetune": {"kk": 50}}, "finetune.kk", "unknown key; did you mean k?"),
    (BENCH_YAML, {"algorithms": {"flexmatch": {"config": "flexmatch_lbidx_digits_10_0.yaml",
                                               "p_cutof": 0.9}}},
     "algorithms.flexmatch.p_cutof", "unknown key; did you mean p_cutoff?"),
    (BENCH_YAML, {"quick": {"seedz": [0]}}, "quick.seedz", "unknown key; did you mean seeds?"),
    (BENCH_YAML, {"quick": {"finetune": {"epoch": 1}}}, "quick.finetune.epoch",
     "unknown key; did you mean epochs?"),
])
def test_run_and_bench_unknown_keys_name_their_path(src, edit, path, message, tmp_path,
                                                    monkeypatch, capsys):
    data = {**C.read_yaml(src), **edit}
    f = tmp_path / src.name
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    for name in ("as3l_flexmatch_digits_10_0.yaml", "flexmatch_lbidx_digits_10_0.yaml"):
        shutil.copy(DIGITS / name, tmp_path / name)
    command = "run" if src == RUN_YAML else "bench"
    code, err, changed = _cli([command, "--config", f.name], tmp_path, monkeypatch, capsys)
    assert (code, changed) == (2, False)
    assert err == [f"as3l: error: {f.name}: {path}: {message}"]


def test_free_blocks_are_left_to_their_component():
    """Sampler / propagator parameters are checked by the sampler / propagator."""
    data = {**C.read_yaml(BENCH_YAML), "samplers": {"as3l_k": {"sampler": "as3l", "k": 5}}}
    C.check_config(data, "bench")
    run = {**C.read_yaml(RUN_YAML), "prior": {"propagator": "knn", "params": {"k": 3}}}
    C.check_config(run, "run")


def test_schemas_declare_what_the_loaders_take():
    import as3l_plugin.bench as bn
    import as3l_plugin.pipeline as pl
    assert set(C.RUN_SCHEMA.keys) == set(pl.CONFIG_DEFAULTS)
    for sec, d in pl.SECTION_DEFAULTS.items():
        assert set(d) <= set(C.RUN_SCHEMA.keys[sec].keys), sec
    assert set(C.BENCH_SCHEMA.keys) == set(bn.BENCH_DEFAULTS)
    # the report-only pairs belong to the full grid (a quick grid keeps those it has)
    assert set(C.BENCH_SCHEMA.keys["quick"].keys) == set(bn.BENCH_DEFAULTS) - {
        "quick", "method", "peers", "prior_effect"}


def _params(*funcs):
    return {n for f in funcs for n, p in inspect.signature(f).parameters.items()
            if p.kind is not p.VAR_KEYWORD}


def test_feature_sections_follow_the_functions_they_feed():
    """pretrain / features / finetune take exactly the keyword arguments of the functions
    (less what the stage sets itself): a new option (objective, cpu_bf16...) is a key."""
    from as3l_plugin.features import extract, finetune, pretrain
    staged = {"dataset", "net", "out", "seed", "device", "data_dir"}
    pre = _params(pretrain.pretrain_simsiam, pretrain.SimSiamPretrainer) - staged - {
        "self", "base_lr"}  # base_lr is pretrain_simsiam's lr
    assert set(C.PRETRAIN_KEYS) == pre
    assert set(C.FEATURES_KEYS) == _params(extract.extract_features) - {
        "checkpoint", "dataset", "device", "data_dir"}
    fine = _params(finetune.finetune_features, finetune.FeatureFinetuner) - {
        "self", "features", "seed", "device", "n_clusters", "n_runs"}
    assert set(C.FINETUNE_KEYS) == fine


def test_train_keys_cover_usb_and_every_algorithm(usb):
    from semilearn.algorithms import name2alg
    from semilearn.lighting.config import get_config as semilearn_get_config
    host = set(vars(semilearn_get_config({"algorithm": "fixmatch"})))
    assert host <= C.TRAIN_KEYS
    names = {a.name.lstrip("-") for k in name2alg.keys() for a in name2alg[k].get_argument()}
    assert names <= set(C.ALGORITHM_FLAGS)


# =========================================================================== shipped configs
@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.stem}" for p in SHIPPED])
def test_shipped_config_passes_with_no_warning(path, usb):
    import as3l_plugin.bench as bn
    import as3l_plugin.pipeline as pl
    from as3l_plugin.usb.train import get_config
    kind = C.detect_kind(C.read_yaml(path))
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        if kind == "train":
            get_config(str(path), warn=lines.append, strict=True)
            return
        assert kind in ("run", "bench"), path
        if kind == "run":
            cfg = pl.load_config(path)
            blocks = {s: pl._usb_block(cfg, s) for s in ("as3l_flexmatch", "baseline")
                      if s == "as3l_flexmatch" or cfg["baseline"]["enabled"]}
        else:
            for quick in (False, True):
                cfg = bn.load_bench_config(path, quick=quick)
            cfg = bn.load_bench_config(path)
            blocks = {a: bn.Bench(cfg, "unused").usb_conf(a) for a in cfg["algorithms"]}
        # each training the run / bench would start: as the train stage builds it
        for name, conf in blocks.items():
            managed = {"dataset": cfg["dataset"], "net": cfg["net"], "seed": 0,
                       "num_labels": 10, "save_dir": "unused"}
            get_config({**conf, **managed}, shared=True, strict=True, warn=lines.append)
    assert lines == []


def test_valid_train_prints_no_new_output(tmp_path, monkeypatch, capsys, usb):
    seen = _stub_training(monkeypatch)
    shutil.copy(TRAIN_YAML, tmp_path / "t.yaml")
    code, err, _ = _cli(["train", "--c", "t.yaml"], tmp_path, monkeypatch, capsys)
    assert (code, err, len(seen)) == (0, [], 1)


# =========================================================================== run / bench base YAMLs
def _run_dir(tmp_path, base_edit=None, **edit):
    """pipeline.yaml and its two base YAMLs copied into tmp_path (the AS3L one edited)."""
    for name in ("as3l_flexmatch_digits_10_0.yaml", "flexmatch_lbidx_digits_10_0.yaml"):
        shutil.copy(DIGITS / name, tmp_path / name)
    if base_edit:
        _edit(AS3L_YAML, tmp_path / "as3l_flexmatch_digits_10_0.yaml", **base_edit)
    f = tmp_path / "pipeline.yaml"
    f.write_text(yaml.safe_dump({**C.read_yaml(RUN_YAML), **edit}, sort_keys=False))
    return f


def test_base_yaml_of_a_run_is_checked_when_the_run_is_loaded(tmp_path, monkeypatch, capsys):
    _run_dir(tmp_path, base_edit={"prior_TT": 5})
    code, err, changed = _cli(["run", "--config", "pipeline.yaml"], tmp_path, monkeypatch,
                              capsys)
    assert (code, changed) == (2, False)
    assert err == [f"as3l: error: {tmp_path / 'as3l_flexmatch_digits_10_0.yaml'}: prior_TT: "
                   "unknown key; did you mean prior_T?"]


def test_base_yaml_of_another_kind_is_refused(tmp_path):
    import as3l_plugin.bench as bn
    shutil.copy(RUN_YAML, tmp_path / "pipeline.yaml")
    data = {**C.read_yaml(BENCH_YAML), "algorithms": {"x": {"config": "pipeline.yaml"}}}
    with pytest.raises(ConfigError, match=r"pipeline\.yaml: this is an as3l run config, not a "
                                          r"USB training config"):
        bn.load_bench_config(_yaml_file(tmp_path / "bench.yaml", data))


def _yaml_file(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_run_training_with_an_algorithm_that_ignores_the_selection(tmp_path):
    import as3l_plugin.pipeline as pl
    f = _run_dir(tmp_path, baseline={"enabled": True,
                                     "config": "flexmatch_lbidx_digits_10_0.yaml",
                                     "algorithm": "mixmatch"})
    with pytest.raises(ConfigError, match=r"flexmatch_lbidx_digits_10_0\.yaml: algorithm: "
                                          r"='mixmatch' would ignore the labeled set"):
        pl.build_stages(pl.load_config(f))
    f = _run_dir(tmp_path, base_edit=None)
    _edit(AS3L_YAML, tmp_path / "as3l_flexmatch_digits_10_0.yaml", drop=("num_classes",))
    with pytest.raises(ConfigError, match="num_classes: the USB config needs num_classes"):
        pl.build_stages(pl.load_config(f))
