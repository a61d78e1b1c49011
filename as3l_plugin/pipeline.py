"""``as3l run``: the whole AS3L job as cached, resumable stages.

Stages and their files (``results/<run>/<stage>/``)::

    pretrain        backbone.pth (+ checkpoint.pth)       SimSiam on the SSL backbone
    features        f_self.npy                            backbone features, dataset order
    finetune        f_fine.npy                            Eq. 1 fine-tuned features (if used)
    choose          choice.json                           the ``auto`` feature set (if used)
    select          lb_labels{B}_1_seed{S}_idx.npy, to_annotate.csv
    labels          labels.csv (index,label)              oracle (dataset), the user's CSV, or
                                                          annotate/to_annotate.csv (annotate)
    prior           prior.npy (n, C) float32               seeded K-means propagation
    train_as3l      <save_name>/metrics.csv, checkpoints  as3l_flexmatch (AS3L labels + prior)
    baseline_select lb_labels…idx.npy, labels.csv         random labels for the baseline
    train_baseline  <save_name>/metrics.csv, checkpoints  flexmatch, same iterations
    evaluate        metrics.csv, summary.md, *.png        copied to results/<run>/

Caching and resume
------------------
Every stage is a :class:`~as3l_plugin.stages.Stage` run by :mod:`as3l_plugin.stages` (cache
keys, fingerprints, ``stage.json``, ``.running.json``, the run lock). A parameter naming a user
file (a labels CSV, a USB base config) enters the key by content (:func:`~as3l_plugin.stages.file_param`);
the resumable stages are pretraining and the two trainings, which continue from their own
checkpoints after a kill. ``results/<run>/.lock`` stops two runs from writing one directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np

from .config import deep_merge, read_yaml
from .errors import ConfigError
from .io import atomic_write_json, sha256_file
from .stages import Stage, StageContext, StageRecord, file_param, run_lock, run_stages

# =========================================================================== configuration
#: top-level keys of a pipeline YAML and their defaults (None = required)
CONFIG_DEFAULTS: Dict[str, Any] = {
    "name": "",               # results/<name> unless --out (default: the config file's stem)
    "dataset": None,          # digits | fashion_mnist | folder | arrays | cifar10 ...
    "data_dir": None,         # where the dataset files are (None: the packaged location);
                              # folder: the image folder, arrays: the .npz
    "img_size": None,         # folder: the side images are resized to (None: their common size)
    "channels": None,         # folder: 1 or 3 to convert every image (None: detected)
    "skip_bad_images": False, # folder: skip unreadable images (listed) instead of stopping
    "net": "cnn4",            # backbone, the same for SimSiam and USB
    "num_labels": None,       # labeling budget (total labels; 10 = 1 per class on 10 classes)
    "seed": 0,                # one seed for every stage
    "device": "cpu",          # torch device of pretrain / features / finetune
    "pretrain": {},           # keyword arguments of features.pretrain_simsiam
    "features": {},           # keyword arguments of features.extract_features
    "finetune": {},           # keyword arguments of features.finetune_features
    "select": {},             # sampler, params, features
    "labels": {},             # source: dataset | csv | annotate; path (csv)
    "prior": {},              # propagator, params, features
    "usb": {},                # USB overrides for both trainings
    "as3l_flexmatch": {},     # config (USB base YAML) + overrides of the AS3L training
    "baseline": {},           # enabled, config, sampler + overrides of the baseline training
}
SECTION_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "select": {"sampler": "as3l", "params": {}, "features": "self"},
    "labels": {"source": "dataset", "path": None},
    "prior": {"propagator": "seeded_kmeans", "params": {}, "features": "self"},
    "as3l_flexmatch": {"config": None},
    "baseline": {"enabled": True, "config": None, "sampler": "random"},
}
#: USB keys the pipeline sets itself (paths into the run directory, the labeled set, the seed)
USB_MANAGED = ("save_dir", "save_name", "resume", "load_path", "lb_index_file", "prior_file",
               "pretrain_path", "num_labels", "seed", "dataset", "net", "data_dir", "epoch")


def load_config(source, *, overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Load and validate a pipeline YAML (or dict) into a complete config dict.

    Relative file paths inside the config (``as3l_flexmatch.config``, ``baseline.config``,
    ``labels.path``) are resolved against the config file's directory; the result holds
    them as absolute paths. ``overrides`` are merged on top (nested dicts merge).
    """
    from .config import check_base_config, read_job_config
    raw, where, base_dir = read_job_config(source, "run", overrides=overrides)
    cfg = deep_merge(CONFIG_DEFAULTS, raw)
    for sec, d in SECTION_DEFAULTS.items():
        if not isinstance(cfg[sec], Mapping):
            raise ConfigError(f"expected a mapping, got {cfg[sec]!r}", path=where, field=sec)
        cfg[sec] = deep_merge(d, cfg[sec])
    for sec in ("pretrain", "features", "finetune", "usb"):
        if not isinstance(cfg[sec], Mapping):
            raise ConfigError(f"expected a mapping, got {cfg[sec]!r}", path=where, field=sec)
    for k in ("dataset", "num_labels"):
        if cfg[k] is None:
            raise ConfigError("is required", path=where, field=k)
    from .datasets import list_datasets
    if cfg["dataset"] not in list_datasets():
        raise ConfigError(f"={cfg['dataset']!r}; known datasets: {', '.join(list_datasets())}",
                          path=where, field="dataset")
    if not isinstance(cfg["num_labels"], int) or cfg["num_labels"] < 1:
        raise ConfigError(f"={cfg['num_labels']!r} must be a positive integer (total labels)",
                          path=where, field="num_labels")
    if not isinstance(cfg["seed"], int) or cfg["seed"] < 0:
        raise ConfigError(f"={cfg['seed']!r} must be a non-negative integer", path=where,
                          field="seed")
    from .validate import check_device
    check_device(cfg["device"], "device", error=ConfigError, path=where)
    for sec in ("select", "prior"):
        check_feature_set(cfg[sec]["features"], path=where, field=f"{sec}.features")
    if cfg["labels"]["source"] not in LABEL_SOURCES:
        raise ConfigError(f"={cfg['labels']['source']!r}; allowed: dataset (simulation with "
                          "the dataset's labels), csv (your annotations) or annotate (label "
                          "the selection in a browser page)", path=where, field="labels.source")
    if cfg["labels"]["source"] == "annotate" and cfg["labels"]["path"]:
        raise ConfigError("is set by the pipeline when labels.source is annotate "
                          "(<run>/annotate/to_annotate.csv); remove it", path=where,
                          field="labels.path")
    if cfg["labels"]["source"] == "csv":
        if not cfg["labels"]["path"]:
            raise ConfigError("is required when labels.source is csv", path=where,
                              field="labels.path")
        cfg["labels"]["path"] = str(base_dir / cfg["labels"]["path"])
    for sec in ("as3l_flexmatch", "baseline"):
        if sec == "baseline" and not cfg[sec]["enabled"]:
            continue
        if not cfg[sec]["config"]:
            raise ConfigError("is required: the USB base YAML of this training (e.g. "
                              "usb_configs/digits/as3l_flexmatch_digits_10_0.yaml)",
                              path=where, field=f"{sec}.config")
        p = base_dir / cfg[sec]["config"]
        if not p.is_file():
            raise ConfigError(f"USB base config {p} not found", path=where,
                              field=f"{sec}.config")
        check_base_config(p)
        cfg[sec]["config"] = str(p)
    managed = sorted(set(cfg["usb"]) & set(USB_MANAGED))
    for sec in ("as3l_flexmatch", "baseline"):
        managed += sorted(set(cfg[sec]) & set(USB_MANAGED))
    if managed:
        raise ConfigError(f"key(s) {managed} are set by the pipeline (paths into the run "
                          "directory, the labeled set, the seed); use the top-level "
                          "dataset/net/num_labels/seed keys instead", path=where, field="usb")
    if not cfg["name"]:
        cfg["name"] = where.stem if where is not None else "run"
    return cfg


#: labels.source values: the dataset's labels, a CSV of the user's, or the annotation page
LABEL_SOURCES = ("dataset", "csv", "annotate")
#: the run's annotation folder (labels.source: annotate), outside every stage directory so
#: that no re-run of a stage can delete the labels a person gave
ANNOTATE_DIR = "annotate"


# =========================================================================== the stages
SAVE_NAME = "usb"          # USB save_name of the trainings: <stage dir>/usb/
STRATIFIED = "stratified"  # pseudo-sampler: class-balanced random labels (needs the labels)
BACKBONE = "backbone.pth"
F_SELF = "f_self.npy"
F_FINE = "f_fine.npy"
PRIOR = "prior.npy"
LABELS = "labels.csv"
METRICS = "metrics.csv"
CHECKPOINT = "latest_model.pth"   # USB's checkpoint a resumed training continues from


def dataset_env(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The stages' ``env`` for a config: dataset, data_dir, device and, for ``folder`` /
    ``arrays``, the dataset options and a fingerprint of the files (the feature stages put
    it in their parameters, so adding, removing or changing images re-runs them)."""
    from .datasets import USER_LOADERS, dataset_options
    env = {"dataset": cfg["dataset"], "data_dir": cfg["data_dir"], "device": cfg["device"]}
    if cfg["dataset"] in USER_LOADERS:
        from .user_datasets import dataset_fingerprint
        env["dataset_options"] = dataset_options(cfg)
        env["dataset_fingerprint"] = dataset_fingerprint(cfg["dataset"], cfg["data_dir"])
    return env


_DATA: Dict[Any, Any] = {}


def env_dataset(env: Mapping[str, Any]):
    """The env's dataset (the last one is kept: stages of one run load it once)."""
    from .datasets import load_dataset
    if env.get("dataset_options") is None:  # built-in datasets: loaded by each stage
        return load_dataset(env["dataset"], env.get("data_dir"))
    opts = dict(env["dataset_options"])
    key = (env["dataset"], env.get("data_dir"), tuple(sorted(opts.items())),
           env.get("dataset_fingerprint"))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_dataset(env["dataset"], env.get("data_dir"), **opts)
    return _DATA[key]


def _pretrain_dataset(env: Mapping[str, Any]):
    """What the feature stages pass as ``dataset``: the name (built-in datasets), or the
    loaded dataset (folder / arrays need their options)."""
    return env_dataset(env) if env.get("dataset_options") is not None else env["dataset"]


def stage_pretrain(ctx: StageContext) -> Dict[str, Any]:
    from .features import pretrain_simsiam
    p = ctx.params
    pretrain_simsiam(dataset=_pretrain_dataset(ctx.env), net=p["net"], out=ctx.dir, seed=p["seed"],
                     device=ctx.env.get("device", "cpu"), data_dir=ctx.env.get("data_dir"),
                     **p["kwargs"])
    return {}


def stage_features(ctx: StageContext) -> Dict[str, Any]:
    from .features import extract_features
    from .io import atomic_save_npy
    p = ctx.params
    X = extract_features(ctx.inputs["pretrain"].path(BACKBONE), dataset=_pretrain_dataset(ctx.env),
                         device=ctx.env.get("device", "cpu"),
                         data_dir=ctx.env.get("data_dir"), **p["kwargs"])
    atomic_save_npy(ctx.dir / F_SELF, X)
    return {"shape": list(X.shape)}


def stage_finetune(ctx: StageContext) -> Dict[str, Any]:
    from .features import finetune_features
    from .io import atomic_save_npy, load_features
    p = ctx.params
    X = load_features(ctx.inputs["features"].path(F_SELF))
    kwargs = dict(p["kwargs"])
    if kwargs.get("k") is None:  # the paper ties the clusters of Eq. 1 to the budget
        kwargs.setdefault("budget", p["budget"])
    Xf = finetune_features(X, seed=p["seed"], device=ctx.env.get("device", "cpu"), **kwargs)
    atomic_save_npy(ctx.dir / F_FINE, Xf)
    return {"shape": list(Xf.shape)}


#: what ``select.features`` / ``prior.features`` (and the bench's ``select_features`` /
#: ``prior_features``) may name: the backbone's features, Eq. 1 fine-tuned ones, PCA of the
#: pixels, or the pick of :func:`~as3l_plugin.features.choose_features` among ``AUTO_CANDIDATES``
FEATURE_SETS = ("self", "fine", "pixels", "auto")
#: the candidates ``auto`` chooses among (see README, "Which feature set")
AUTO_CANDIDATES = ("pixels", "self", "fine")
CHOICE = "choice.json"
_STAGE_OF = {"self": ("features",), "fine": ("finetune",), "pixels": ()}


def check_feature_set(value, *, path=None, field: str = "features") -> str:
    """The one validator of a feature-set name (:data:`FEATURE_SETS`)."""
    if value not in FEATURE_SETS:
        raise ConfigError(f"={value!r}; allowed: {', '.join(FEATURE_SETS)}", path=path,
                          field=field)
    return value


def feature_inputs(which: str) -> tuple:
    """Stages whose outputs the feature set ``which`` is read from."""
    if which == "auto":
        return ("choose",) + tuple(s for c in AUTO_CANDIDATES for s in _STAGE_OF[c])
    return _STAGE_OF[which]


def _needs(which: Iterable[str]) -> set:
    """Feature stages (``finetune``, ``choose``) the named feature sets need."""
    return {s for w in which for s in feature_inputs(w)}


_VIEWS: Dict[str, Any] = {}


def _dataset_view(env: Mapping[str, Any], name: str) -> np.ndarray:
    """A label-free view of the training images, float32 ``(n, d)``, computed once per
    process and dataset: ``pixels`` (PCA-50, a candidate of ``auto``) or ``hog`` (HOG, the
    judge of ``auto``'s choice)."""
    from .features.choose import hog_features, pixel_features
    key = (env.get("dataset"), env.get("data_dir"), str(env.get("dataset_options")),
           env.get("dataset_fingerprint"))
    if name not in _VIEWS or _VIEWS[name][0] != key:
        images = env_dataset(env).x_train
        _VIEWS[name] = (key, pixel_features(images) if name == "pixels"
                        else hog_features(images, progress=True))
    return _VIEWS[name][1]


def _resolve(ctx: StageContext, which: str) -> str:
    """``auto`` → the feature set the ``choose`` stage picked; other names unchanged."""
    return ctx.inputs["choose"].result["pick"] if which == "auto" else which


def _features_of(ctx: StageContext, which: str):
    from .io import load_features
    which = _resolve(ctx, which)
    if which == "fine":
        return load_features(ctx.inputs["finetune"].path(F_FINE))
    if which == "pixels":
        return _dataset_view(ctx.env, "pixels")
    return load_features(ctx.inputs["features"].path(F_SELF))


def _choice_meta(ctx: StageContext, which: str) -> Dict[str, Any]:
    """Sidecar keys naming the feature set used, and why when ``auto`` picked it
    (``features_choice`` is None unless ``auto``)."""
    meta = {"features": _resolve(ctx, which), "features_choice": None}
    if which == "auto":
        r = ctx.inputs["choose"].result
        meta["features_choice"] = {"requested": "auto", "criterion": r["criterion"],
                                   "scores": r["scores"], "pick": r["pick"]}
    return meta


def stage_choose(ctx: StageContext) -> Dict[str, Any]:
    """``auto``: score every candidate with :func:`~as3l_plugin.features.choose_features`
    (no labels) and record the pick in ``choice.json`` (and in this stage's result)."""
    from .features.choose import choose_features
    p = ctx.params
    cand = {c: _features_of(ctx, c) for c in p["candidates"]}
    judge = _dataset_view(ctx.env, "hog") if p["criterion"] == "judge" else None
    pick, scores = choose_features(cand, p["budget"], seed=p["seed"],
                                   criterion=p["criterion"], judge=judge)
    out = {"pick": pick, "scores": {k: float(v) for k, v in scores.items()},
           "criterion": p["criterion"], "budget": int(p["budget"]), "seed": int(p["seed"])}
    atomic_write_json(ctx.dir / CHOICE, out)
    ctx.log(f"  auto features: {pick} (" + ", ".join(
        f"{k} {v:.3f}" for k, v in out["scores"].items()) + ")")
    return out


def _write_selection(sdir: Path, idx, meta: Mapping[str, Any], labels=None) -> str:
    """to_annotate.csv (labels filled when given), then the index file in USB's naming and,
    last, its sidecar (a kill in between leaves an index without sidecar: unfinished)."""
    from .artifacts import write_selection
    return write_selection(sdir, idx, meta, labels=labels).name


def stratified_selection(y: np.ndarray, budget: int, num_classes: int, seed: int) -> np.ndarray:
    """Class-balanced random labels (the usual SSL protocol; it *uses the true labels*):
    ``budget // C`` per class, the remainder spread over randomly chosen classes."""
    rng = np.random.default_rng(seed)
    per = np.full(num_classes, budget // num_classes)
    per[rng.choice(num_classes, budget % num_classes, replace=False)] += 1
    idx = [rng.choice(np.flatnonzero(y == c), per[c], replace=False) for c in range(num_classes)]
    return np.concatenate(idx).astype(np.int64)


def _select(ctx: StageContext, sampler: str, params: Mapping[str, Any], features: str):
    """Run a sampler of :mod:`as3l_plugin.selection`, or ``stratified`` (oracle labels)."""
    from .artifacts import selection_meta
    from .io import sha256_array
    from .selection import get_sampler
    X = _features_of(ctx, features)
    budget, seed = ctx.params["budget"], ctx.params["seed"]
    if ctx.env.get("dataset_options") is not None and budget > X.shape[0]:
        from .errors import DatasetError
        raise DatasetError(f"holds {X.shape[0]} images, fewer than the labeling budget "
                           f"num_labels={budget}; lower num_labels or add images",
                           path=ctx.env.get("data_dir"))
    smp = None
    if sampler == STRATIFIED:
        data = env_dataset(ctx.env)
        idx = stratified_selection(data.y_train, budget, data.num_classes, seed)
    else:
        smp = get_sampler(sampler, **params)
        idx = np.asarray(smp.select(X, budget, seed=seed), dtype=np.int64)
    files = env_dataset(ctx.env).files_sha256 if ctx.env.get("dataset_options") is not None \
        else None
    meta = selection_meta(sampler=sampler, params=params, sampler_obj=smp, budget=budget,
                          seed=seed, n=X.shape[0], num_features=X.shape[1],
                          dataset=ctx.env.get("dataset"), features_sha256=sha256_array(X),
                          dataset_files_sha256=files, **_choice_meta(ctx, features))
    return X, idx, meta


def stage_select(ctx: StageContext) -> Dict[str, Any]:
    p = ctx.params
    _, idx, meta = _select(ctx, p["sampler"], p["params"], p["features"])
    name = _write_selection(ctx.dir, idx, meta)
    return {"index_file": name, "n": meta["n"]}


def _selected(rec: StageRecord) -> np.ndarray:
    from .io import load_npy
    return load_npy(rec.path(rec.result["index_file"]), what="label index").astype(np.int64)


def stage_labels(ctx: StageContext) -> Dict[str, Any]:
    """Labels of the selected samples: the dataset's (simulation) or the user's CSV."""
    from .annotations import HEADER, annotation_rows, read_labels_csv
    from .io import atomic_write_csv
    from .metrics import class_coverage
    p = ctx.params
    data = env_dataset(ctx.env)
    idx = _selected(ctx.inputs["select"])
    if p["source"] == "dataset":
        labels = data.y_train[idx]
        disagree = 0
        if (labels < 0).any():
            raise ConfigError(f"=dataset (simulation) but {int((labels < 0).sum())} selected "
                              f"samples have no label in the {data.name} pool; set labels.source: "
                              "annotate (or csv with labels.path: <your CSV>)",
                              field="labels.source")
    else:
        from .datasets import class_names
        labels = read_labels_csv(p["file"]["path"], idx, data.num_classes,
                                 n_samples=len(data.y_train), class_names=class_names(data),
                                 paths=getattr(data, "paths", None))
        known = data.y_train[idx] >= 0  # an unlabeled pool (folder) has nothing to compare
        disagree = int((labels[known] != data.y_train[idx][known]).sum())
        if disagree:
            reads = ("yours too" if ctx.env.get("dataset_options") is not None
                     else "labels from the dataset")
            ctx.log(f"  note: {disagree} of your {len(idx)} labels differ from the dataset's; "
                    f"the prior uses yours, USB training reads {reads}")
    atomic_write_csv(ctx.dir / LABELS, HEADER, annotation_rows(idx, labels))
    sel = ctx.inputs["select"]
    return {"coverage": int(class_coverage(labels, data.num_classes)), "source": p["source"],
            # relative to this stage's directory, so a moved run directory still finds it
            "index_file": os.path.relpath(_selected_path(sel).resolve(), ctx.dir.resolve()),
            "index_sha256": sel.outputs[sel.result["index_file"]]["sha256"],
            "num_classes": int(data.num_classes), "disagree_with_dataset": disagree,
            "label_counts": np.bincount(labels, minlength=data.num_classes).tolist()}


def _read_labels(rec: StageRecord) -> np.ndarray:
    """The labels stage's ``labels.csv`` as int64 ``(m, 2)`` rows ``(index, class id)``."""
    from .annotations import read_label_table
    idx, labels = read_label_table(rec.path(LABELS), rec.result["num_classes"])
    return np.stack([idx, labels], axis=1)


def prior_diagnostics(prior: np.ndarray, y: np.ndarray, idx: np.ndarray,
                      num_classes: int) -> Dict[str, Any]:
    """Prior accuracy / ECE on the unlabeled rows and per-class accuracy (JSON-able)."""
    from .metrics import expected_calibration_error, prior_accuracy
    from .report import per_class_accuracy
    unknown = np.flatnonzero(np.asarray(y) < 0)  # an unlabeled pool (folder): no reference
    if unknown.size:
        if unknown.size + np.unique(idx).size >= len(y):
            return {"prior_acc": float("nan"), "ece": float("nan"),
                    "per_class_acc": [None] * int(num_classes)}
        idx = np.union1d(idx, unknown)
    pc = per_class_accuracy(prior.argmax(1), y, num_classes, exclude=idx)
    return {"prior_acc": float(prior_accuracy(prior, y, exclude=idx)),
            "ece": float(expected_calibration_error(prior, y, n_bins=15, exclude=idx)),
            "per_class_acc": [None if not np.isfinite(v) else float(v) for v in pc]}


def stage_prior(ctx: StageContext) -> Dict[str, Any]:
    """Prior from the labels stage's labels; sidecar as ``as3l prior`` writes it (the index
    checksum lets ``as3l train`` refuse a prior made for another labeled set)."""
    from .artifacts import prior_meta, read_artifact_sidecar, write_prior
    from .io import sha256_array
    from .propagation import get_propagator
    p = ctx.params
    data = env_dataset(ctx.env)
    lab = _read_labels(ctx.inputs["labels"])
    X = _features_of(ctx, p["features"])
    prop = get_propagator(p["propagator"], **p["params"])
    prior = np.asarray(prop.propagate(X, lab[:, 0], lab[:, 1], data.num_classes,
                                      seed=p["seed"]), dtype=np.float32)
    rec = ctx.inputs["labels"]
    sel = rec.result
    # the labels stage records the index relative to its directory (older records: absolute)
    index_file = rec.path(sel["index_file"])
    write_prior(ctx.dir / PRIOR, prior, prior_meta(
        n=prior.shape[0], num_classes=data.num_classes, idx=lab[:, 0], labels=lab[:, 1],
        propagator=p["propagator"], params=p["params"], prop_obj=prop, seed=p["seed"],
        dataset=ctx.env.get("dataset"), selection=read_artifact_sidecar(index_file,
                                                                        required=False),
        features_sha256=sha256_array(X), index_file=index_file,
        index_sha256=sel["index_sha256"], labels_source=sel["source"],
        labels_file=rec.path(LABELS), labels_sha256=sha256_file(rec.path(LABELS)),
        dataset_files_sha256=data.files_sha256, **_choice_meta(ctx, p["features"])))
    return prior_diagnostics(prior, data.y_train, lab[:, 0], data.num_classes)


def stage_baseline_select(ctx: StageContext) -> Dict[str, Any]:
    """Random labels (oracle-labeled) for the baseline, with the prior they would give."""
    from .annotations import HEADER, annotation_rows
    from .io import atomic_write_csv
    from .metrics import class_coverage
    from .propagation import get_propagator
    p = ctx.params
    data = env_dataset(ctx.env)
    X, idx, meta = _select(ctx, p["sampler"], p["params"], p["features"])
    labels = data.y_train[idx]
    name = _write_selection(ctx.dir, idx, meta, labels)
    atomic_write_csv(ctx.dir / LABELS, HEADER, annotation_rows(idx, labels))
    prior = get_propagator(p["propagator"], **p["prior_params"]).propagate(
        X, idx, labels, data.num_classes, seed=p["seed"])
    out = prior_diagnostics(np.asarray(prior), data.y_train, idx, data.num_classes)
    out.update(index_file=name, n=meta["n"],
               coverage=int(class_coverage(labels, data.num_classes)))
    return out


def stage_train(ctx: StageContext) -> Dict[str, Any]:
    """One USB training; resumes from <stage>/usb/latest_model.pth after a kill."""
    from .usb.train import train
    conf = dict(ctx.params["usb"])
    conf.update(ctx.params["managed"])
    conf.update(save_dir=str(ctx.dir), save_name=SAVE_NAME, overwrite=True,
                data_dir=ctx.env.get("data_dir") or conf.get("data_dir", "./data"))
    sel = [r for r in ctx.inputs.values() if "index_file" in r.result and r.name != "labels"]
    if len(sel) != 1:
        raise ConfigError(f"stage {ctx.name!r} needs exactly one selection input, got "
                          f"{[r.name for r in sel]}")
    conf["lb_index_file"] = str(_selected_path(sel[0]))
    opts = ctx.env.get("dataset_options")
    if opts is not None:  # folder / arrays: USB loads them as the other stages did
        conf.update({k: v for k, v in opts.items() if v is not None})
        conf["img_size"] = int(env_dataset(ctx.env).image_size)
        # the labels the prior was made from (an unlabeled folder has no others); the
        # baseline's and the bench's trainings have no labels stage: their selection's
        lab = ctx.inputs.get("labels") or sel[0]
        if (lab.dir / LABELS).is_file():
            conf["lb_labels_file"] = str(lab.dir / LABELS)
    if "prior" in ctx.inputs:
        conf["prior_file"] = str(ctx.inputs["prior"].path(PRIOR))
    if "pretrain" in ctx.inputs:
        conf["use_pretrain"] = True
        conf["pretrain_path"] = str(ctx.inputs["pretrain"].path(BACKBONE))
    latest = ctx.dir / SAVE_NAME / CHECKPOINT
    resume = bool(ctx.resuming and latest.is_file())
    if resume:  # USB writes checkpoints in place: a kill during the write leaves a torn file
        import torch
        try:
            torch.load(latest, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means start over
            ctx.log(f"  checkpoint {latest} is unreadable ({type(exc).__name__}: killed while "
                    "it was written?); restarting this training from scratch")
            resume = False
    conf["resume"] = resume
    conf["load_path"] = str(latest) if resume else None
    if resume:
        ctx.log(f"  resuming USB training from {latest}")
    with _quiet_usb_console():
        out = train(conf, hooks=((_progress_hook(f"{ctx.name} ({conf['algorithm']})"),
                                  "LOWEST"),), shared=True)
    if resume:  # the stage's time: this run's and what the kept checkpoint had cost
        ctx.add_earlier_time(out.get("resumed_wall_s", 0.0), out.get("resumed_cpu_s"))
    return {"best_acc": float(out["best_acc"]), "best_it": int(out["best_it"]),
            "final_acc": float(out["final_acc"]), "num_train_iter": int(conf["num_train_iter"]),
            "algorithm": conf["algorithm"]}


@contextlib.contextmanager
def _quiet_usb_console():
    """USB logs every evaluation (with a confusion matrix) to the console through the root
    logger; keep that in ``<run>/usb/log.txt`` and show only warnings on the console."""
    import logging
    import warnings
    root = logging.getLogger()
    added = None
    if not root.handlers:  # else USB's logging.basicConfig would install an INFO console
        added = logging.StreamHandler(sys.stderr)
        added.setLevel(logging.WARNING)
        added.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
        root.addHandler(added)
    usb_logger = logging.getLogger(SAVE_NAME)
    old_level = usb_logger.level
    usb_logger.setLevel(logging.INFO)  # the file handler still gets everything
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ill-defined.*")  # sklearn, 0 predictions
            yield
    finally:
        usb_logger.setLevel(old_level)
        if added is not None:
            root.removeHandler(added)


def _progress_hook(desc: str):
    """A USB hook drawing a tqdm bar over training iterations (with the last test accuracy)."""
    from semilearn.core.hooks import Hook
    from tqdm.auto import tqdm

    class TqdmHook(Hook):
        bar = None

        def before_run(self, algorithm):
            self.bar = tqdm(total=int(algorithm.num_train_iter), initial=int(algorithm.it),
                            desc=desc, unit="it", dynamic_ncols=True, leave=False)

        def after_train_step(self, algorithm):
            if self.bar is None:
                return
            self.bar.update(int(algorithm.it) + 1 - self.bar.n)
            acc = (getattr(algorithm, "log_dict", None) or {}).get("eval/top-1-acc")
            if acc is not None:
                self.bar.set_postfix_str(f"test acc {100 * float(acc):.1f}%", refresh=False)

        def after_run(self, algorithm):
            if self.bar is not None:
                self.bar.close()

    return TqdmHook()


def _selected_path(rec: StageRecord) -> Path:
    return rec.path(rec.result["index_file"])


def stage_evaluate(ctx: StageContext) -> Dict[str, Any]:
    """Curves of both trainings → metrics.csv, the comparison numbers, the two plots."""
    from . import report as rp
    p = ctx.params
    curves = {"as3l_flexmatch": rp.read_metrics(ctx.inputs["train_as3l"].path(f"{SAVE_NAME}/{METRICS}"))}
    base_name = None
    if "train_baseline" in ctx.inputs:
        base_name = f"flexmatch_{p['baseline_sampler']}"
        curves[base_name] = rp.read_metrics(
            ctx.inputs["train_baseline"].path(f"{SAVE_NAME}/{METRICS}"))
    rp.write_curves_csv(ctx.dir / METRICS, curves)
    out: Dict[str, Any] = {"runs": {}}
    for name, c in curves.items():
        best, best_it = rp.best_accuracy(c)
        out["runs"][name] = {"final_acc": rp.final_accuracy(c), "best_acc": best,
                             "best_it": best_it, "last_it": int(c[0][-1]) if len(c[0]) else 0}
    hline = None
    if base_name is not None:
        target = out["runs"][base_name]["final_acc"]
        ref_iters = p["num_train_iter"]
        for name, c in curves.items():
            reach = rp.iterations_to_reach(c, target)
            out["runs"][name]["iters_to_target"] = reach
            out["runs"][name]["speedup"] = rp.speedup(ref_iters, reach)
        out["target_acc"] = target
        out["first_eval"] = int(curves["as3l_flexmatch"][0][0]) if len(curves["as3l_flexmatch"][0]) else None
        hline = (target, f"{base_name} final accuracy")
    rp.plot_accuracy_curves({k: [v] for k, v in curves.items()}, ctx.dir / "acc_vs_iteration.png",
                            title=f"{p['dataset']}, {p['num_labels']} labels: test accuracy",
                            hline=hline)
    per_class = {"AS3L labels (" + p["prior_name"] + ")": ctx.inputs["prior"].result["per_class_acc"]}
    if "baseline_select" in ctx.inputs:
        per_class[f"{p['baseline_sampler']} labels"] = \
            ctx.inputs["baseline_select"].result["per_class_acc"]
    from .datasets import class_names
    C = len(next(iter(per_class.values())))
    rp.plot_per_class({k: [np.nan if v is None else v for v in vals]
                       for k, vals in per_class.items()}, ctx.dir / "prior_per_class.png",
                      class_names=class_names(env_dataset(ctx.env), C))
    return out


PLOTS = ("acc_vs_iteration.png", "prior_per_class.png")


def usb_config(base_path, usb: Mapping[str, Any], extra: Mapping[str, Any]) -> Dict[str, Any]:
    """Base USB YAML < the shared ``usb:`` block < per-run overrides, minus the keys the
    pipeline sets itself (:data:`USB_MANAGED`).

    USB's ``epoch`` is set to ``num_train_iter / num_eval_iter`` so that every checkpoint
    (taken at each evaluation) falls on an epoch end: USB resumes at the epoch *after* the
    saved one, so with ``epoch: 1`` a run killed mid-way would stop at once when resumed.
    """
    conf = deep_merge(deep_merge(read_yaml(Path(base_path)), usb), extra)
    for k in USB_MANAGED:
        conf.pop(k, None)
    for k in ("algorithm", "num_classes", "num_train_iter", "num_eval_iter"):
        if k not in conf:
            raise ConfigError(f"the USB config needs {k}", path=base_path, field=k)
    from .config import LB_INDEX_ALGORITHMS
    if conf["algorithm"] not in LB_INDEX_ALGORITHMS:
        raise ConfigError(f"={conf['algorithm']!r} would ignore the labeled set the stages "
                          f"select (lb_index_file); use one of {', '.join(LB_INDEX_ALGORITHMS)}",
                          path=base_path, field="algorithm")
    n, e = int(conf["num_train_iter"]), int(conf["num_eval_iter"])
    if e < 1 or n % e:
        raise ConfigError(f"num_train_iter={n} must be a multiple of num_eval_iter={e} "
                          "(checkpoints are taken at evaluations; resuming needs them on "
                          "epoch ends)", path=base_path, field="num_eval_iter")
    conf["epoch"] = n // e
    if conf.get("use_pretrain") is None:
        conf["use_pretrain"] = True
    return conf


def _usb_block(cfg: Mapping[str, Any], section: str) -> Dict[str, Any]:
    extra = {k: v for k, v in cfg[section].items()
             if k not in ("config", "enabled", "sampler", "params")}
    return usb_config(cfg[section]["config"], cfg["usb"], extra)


def build_stages(cfg: Mapping[str, Any]) -> List[Stage]:
    """The stages of ``as3l run`` for a config from :func:`load_config`."""
    env = dataset_env(cfg)
    sel = cfg["select"]
    prior = cfg["prior"]
    managed = {"dataset": cfg["dataset"], "net": cfg["net"], "num_labels": cfg["num_labels"],
               "seed": cfg["seed"]}
    stages = feature_stages(cfg, env, uses=(sel["features"], prior["features"]))
    stages += [
        Stage("select", stage_select, inputs=feature_inputs(sel["features"]),
              params={"sampler": sel["sampler"], "params": sel["params"],
                      "features": sel["features"], "budget": cfg["num_labels"],
                      "seed": cfg["seed"]},
              outputs=(_index_name(cfg),), env=env),
        Stage("labels", stage_labels, inputs=("select",),
              params={"dataset": cfg["dataset"], "source": cfg["labels"]["source"],
                      "file": _labels_file_param(cfg)},
              outputs=(LABELS,), env=env),
        Stage("prior", stage_prior, inputs=("labels",) + feature_inputs(prior["features"]),
              params={"propagator": prior["propagator"], "params": prior["params"],
                      "features": prior["features"], "seed": cfg["seed"]},
              outputs=(PRIOR,), env=env),
    ]
    as3l_usb = _usb_block(cfg, "as3l_flexmatch")
    pre = ("pretrain",) if as3l_usb["use_pretrain"] else ()
    lab = ("labels",) if env.get("dataset_options") is not None else ()
    stages.append(Stage("train_as3l", stage_train, inputs=("select", "prior") + pre + lab,
                        params={"usb": as3l_usb, "managed": managed},
                        outputs=(f"{SAVE_NAME}/{METRICS}",), resumable=True, env=env))
    eval_inputs = ("prior", "train_as3l")
    base = cfg["baseline"]
    if base["enabled"]:
        base_usb = _usb_block(cfg, "baseline")
        if base_usb["num_train_iter"] != as3l_usb["num_train_iter"]:
            raise ConfigError(f"num_train_iter differs between the runs "
                              f"({as3l_usb['num_train_iter']} vs {base_usb['num_train_iter']});"
                              " the comparison needs the same iteration budget",
                              field="baseline.num_train_iter")
        pre = ("pretrain",) if base_usb["use_pretrain"] else ()
        stages += [
            Stage("baseline_select", stage_baseline_select,
                  inputs=feature_inputs(sel["features"]),
                  params={"sampler": base["sampler"], "params": base.get("params") or {},
                          "features": sel["features"], "budget": cfg["num_labels"],
                          "seed": cfg["seed"], "propagator": prior["propagator"],
                          "prior_params": prior["params"], "dataset": cfg["dataset"]},
                  outputs=(_index_name(cfg), LABELS), env=env),
            Stage("train_baseline", stage_train, inputs=("baseline_select",) + pre,
                  params={"usb": base_usb, "managed": managed},
                  outputs=(f"{SAVE_NAME}/{METRICS}",), resumable=True, env=env),
        ]
        eval_inputs += ("baseline_select", "train_baseline")
    stages.append(Stage("evaluate", stage_evaluate, inputs=eval_inputs,
                        params={"dataset": cfg["dataset"], "num_labels": cfg["num_labels"],
                                "num_train_iter": as3l_usb["num_train_iter"],
                                "baseline_sampler": base["sampler"],
                                "prior_name": prior["propagator"]},
                        outputs=(METRICS,) + PLOTS, env=env))
    return stages


def _index_name(cfg) -> str:
    from .io import index_filename
    return index_filename(cfg["num_labels"], cfg["seed"])


def feature_stages(cfg: Mapping[str, Any], env: Mapping[str, Any],
                   uses: Iterable[str] = ("self",)) -> List[Stage]:
    """pretrain → features, then finetune and choose when the feature sets in ``uses``
    need them (shared with ``as3l bench``, which runs the first two once per seed)."""
    common = {"dataset": cfg["dataset"], "net": cfg["net"], "seed": cfg["seed"]}
    data = {}
    if env.get("dataset_options") is not None:  # folder / arrays: their options and files
        data = {"data": {"options": dict(env["dataset_options"]), "data_dir": str(env["data_dir"]),
                         "files": env.get("dataset_fingerprint")}}
    common.update(data)
    needs = _needs(uses)
    stages = [
        Stage("pretrain", stage_pretrain, params={**common, "kwargs": dict(cfg["pretrain"])},
              outputs=(BACKBONE,), resumable=True, env=env),
        Stage("features", stage_features, inputs=("pretrain",),
              params={"dataset": cfg["dataset"], "kwargs": dict(cfg["features"]), **data},
              outputs=(F_SELF,), env=env),
    ]
    if "finetune" in needs:
        stages.append(Stage("finetune", stage_finetune, inputs=("features",),
                            params={"seed": cfg["seed"], "budget": cfg["num_labels"],
                                    "kwargs": dict(cfg["finetune"])},
                            outputs=(F_FINE,), env=env))
    if "choose" in needs:
        from .features.choose import CRITERION
        stages.append(Stage("choose", stage_choose, inputs=feature_inputs("auto")[1:],
                            params={"seed": cfg["seed"], "budget": cfg["num_labels"],
                                    "dataset": cfg["dataset"], "criterion": CRITERION,
                                    "candidates": list(AUTO_CANDIDATES)},
                            outputs=(CHOICE,), env=env))
    return stages


def _labels_file_param(cfg) -> Optional[Dict[str, Any]]:
    if cfg["labels"]["source"] == "dataset":
        return None
    path = Path(cfg["labels"]["path"])
    return file_param(path) if path.is_file() else {"path": str(path), "sha256": None}


# =========================================================================== summary, entry
def _run_label(name: str) -> str:
    return {"as3l_flexmatch": "as3l_flexmatch (AS3L labels + prior)"}.get(
        name, name.replace("flexmatch_", "flexmatch (") + " labels)" if name.startswith("flexmatch_") else name)


def summary_markdown(cfg: Mapping[str, Any], records: Mapping[str, StageRecord],
                     root: Path, wall_total: float) -> str:
    """The table a person reads: labels, prior, both trainings, speed-up, time per stage."""
    from . import report as rp
    ev = records["evaluate"].result
    runs = ev["runs"]
    names = list(runs)
    C = records["labels"].result["num_classes"]
    pr = records["prior"].result
    bs = records.get("baseline_select")
    iters = records["train_as3l"].result["num_train_iter"]

    def per_run(f_as3l, f_base):
        return [f_as3l] + ([f_base] if len(names) > 1 else [])

    rows = [
        ["labeled-set class coverage",
         *per_run(f"{records['labels'].result['coverage']}/{C}",
                  f"{bs.result['coverage']}/{C}" if bs else None)],
        ["prior accuracy on unlabeled samples (%)",
         *per_run(rp.pct(pr["prior_acc"]),
                  (rp.pct(bs.result["prior_acc"]) + " (not used)") if bs else None)],
        ["prior ECE", *per_run(f"{pr['ece']:.3f}",
                               f"{bs.result['ece']:.3f} (not used)" if bs else None)],
        ["final test accuracy (%)", *[rp.pct(runs[n]["final_acc"]) for n in names]],
        ["best test accuracy (%) @ iteration",
         *[f"{rp.pct(runs[n]['best_acc'])} @ {runs[n]['best_it']}" for n in names]],
    ]
    if "target_acc" in ev:
        a = runs[names[0]]
        reach, first = a["iters_to_target"], ev.get("first_eval")
        bound = reach is not None and reach == first  # reached at the first evaluation
        rows += [
            [f"iterations to reach the baseline's final accuracy ({rp.pct(ev['target_acc'])}%)",
             "not reached" if reach is None else
             (f"≤ {reach} (first evaluation)" if bound else str(reach)),
             f"{iters} (reference)"],
            ["speed-up (reference iterations / iterations to reach)",
             "–" if not np.isfinite(a["speedup"]) else
             (f"≥ {a['speedup']:.2f}×" if bound else f"{a['speedup']:.2f}×"), "1× (reference)"],
        ]
    header = [f"{cfg['dataset']}, {cfg['num_labels']} labels, seed {cfg['seed']}, "
              f"{iters} iterations"] + [_run_label(n) for n in names]
    out = [f"# AS3L run `{cfg['name']}`\n",
           rp.markdown_table(header, rows, align="l" + "r" * len(names)),
           "\n## Wall time per stage\n"]
    trows = []
    for name, rec in records.items():
        trows.append([name, rp.format_seconds(rec.wall_s), rp.format_seconds(rec.cpu_s),
                      "cached (times of the run that made it)" if rec.cached else "ran now"])
    total = [r.wall_s for r in records.values()]
    cpu = [r.cpu_s for r in records.values()]
    known = all(np.isfinite(cpu))  # a resumed stage's earlier CPU time may be unknown
    trows.append(["**all stages**", rp.format_seconds(float(sum(total))),
                  ("" if known else "≥ ") + rp.format_seconds(float(np.nansum(cpu))), ""])
    trows.append(["**this invocation**", rp.format_seconds(wall_total), "", ""])
    out.append(rp.markdown_table(["stage", "wall time", "CPU time", ""], trows, align="lrrl"))
    out.append("CPU time = user + system time of the process (≈ the wall time on an idle "
               "machine with one thread; more than the wall time with several threads).\n")
    out += _per_class_section(cfg, records)
    sel = records["select"]
    files = [("label index", sel.path(sel.result["index_file"])),
             ("labels", records["labels"].path(LABELS)),
             ("prior", records["prior"].path(PRIOR)),
             ("as3l_flexmatch checkpoints", records["train_as3l"].path(SAVE_NAME)),
             ("SimSiam backbone", records["pretrain"].path(BACKBONE))]
    if "train_baseline" in records:
        files.append(("baseline checkpoints", records["train_baseline"].path(SAVE_NAME)))
    out.append("\n## Files\n")
    out += [f"- {what}: `{_rel(path, root)}`" for what, path in files]
    out.append("- curves: `metrics.csv`, `acc_vs_iteration.png`; prior per class: "
               "`prior_per_class.png`\n")
    return "\n".join(out)


def annotation_dir(root) -> Path:
    """The run's annotation folder: ``<root>/annotate/`` (see :data:`ANNOTATE_DIR`)."""
    return Path(root) / ANNOTATE_DIR


def with_annotation_path(cfg: Mapping[str, Any], root) -> Dict[str, Any]:
    """``cfg`` with ``labels.path`` set to the run's ``annotate/to_annotate.csv`` when
    ``labels.source`` is ``annotate`` (the labels stage then reads it like a user CSV)."""
    from .annotations import ANNOTATION_FILENAME
    cfg = dict(cfg)
    if cfg["labels"]["source"] == "annotate":
        cfg["labels"] = {**cfg["labels"],
                         "path": str((annotation_dir(root) / ANNOTATION_FILENAME).resolve())}
    return cfg


def prepare_annotation(select: StageRecord, root, env: Mapping[str, Any]):
    """Copy the selection into ``<root>/annotate/`` (index + sidecar, an empty
    ``to_annotate.csv`` the first time) and write ``annotate.html`` and
    ``contact_sheet.png`` there; returns the :class:`~as3l_plugin.annotate.Annotation`.

    Labels given for an earlier selection are never overwritten: if the select stage made a
    new selection while ``to_annotate.csv`` holds labels, that is a :class:`LabelsError`.
    """
    from . import annotate as an
    from .annotations import ANNOTATION_FILENAME, count_filled
    from .errors import LabelsError
    from .io import atomic_write_bytes, sidecar_path
    adir = annotation_dir(root)
    src = select.path(select.result["index_file"])
    dst = adir / src.name
    csv = adir / ANNOTATION_FILENAME
    if not (dst.is_file() and dst.read_bytes() == src.read_bytes()):
        stale = sorted(adir.glob("lb_labels*_idx.npy")) if adir.is_dir() else []
        if csv.is_file() and count_filled(csv):
            raise LabelsError(f"holds {count_filled(csv)} label(s) of another selection (the "
                              "select stage changed); move the file away to annotate the new "
                              "selection, or restore the old select settings", path=csv)
        adir.mkdir(parents=True, exist_ok=True)
        for old in stale:
            old.unlink()
            sidecar_path(old).unlink(missing_ok=True)
        csv.unlink(missing_ok=True)
        atomic_write_bytes(sidecar_path(dst), sidecar_path(src).read_bytes())
        atomic_write_bytes(dst, src.read_bytes())
    ann = an.open_selection(adir, dataset=env_dataset(env), index=dst)
    if not csv.is_file():
        ann.save()
    an.write_contact_sheet(ann)
    an.write_page(ann)
    return ann


def _awaiting_message(ann, config, out, data_dir=None) -> str:
    """What to do next when the run waits for the annotation (printed by ``as3l run``)."""
    cmd = "as3l run --config " + (str(config) if not isinstance(config, Mapping) else "CONFIG")
    if out is not None:
        cmd += f" --out {out}"
    skipped = f" ({ann.num_skipped} marked skip / unsure)" if ann.num_skipped else ""
    return "\n".join([
        f"labels needed: {ann.num_labeled} / {ann.idx.size} selected images have a class"
        f"{skipped}; nothing was trained.",
        f"  label them: as3l annotate {ann.dir} --serve"
        f"{f' --data-dir {data_dir}' if data_dir else ''}   (saves every click)",
        f"     or open: {ann.dir / 'annotate.html'} and put the downloaded to_annotate.csv "
        f"into {ann.dir}/",
        f"  contact sheet: {ann.dir / 'contact_sheet.png'}",
        f"  then continue: {cmd}"])


def _per_class_section(cfg: Mapping[str, Any], records: Mapping[str, StageRecord]) -> List[str]:
    """Per class, by name: labels in the AS3L labeled set and the prior's accuracy."""
    from . import report as rp
    from .datasets import class_names
    lab = records["labels"].result
    counts = lab.get("label_counts") or []
    acc = records["prior"].result.get("per_class_acc") or []
    bs = records.get("baseline_select")
    base = (bs.result.get("per_class_acc") or []) if bs else []
    names = class_names(env_dataset(dataset_env(cfg)), len(counts))
    head = ["class", "AS3L labels", "prior accuracy (%)"] + \
        (["prior accuracy, baseline labels (%)"] if base else [])
    rows = [[names[c], str(k), rp.pct(acc[c] if c < len(acc) else None)]
            + ([rp.pct(base[c] if c < len(base) else None)] if base else [])
            for c, k in enumerate(counts)]
    return ["\n## Per class\n", rp.markdown_table(head, rows, align="lr" + "r" * (len(head) - 2))]


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def run_pipeline(config, *, out=None, force: Iterable[str] = (),
                 log: Callable[[str], None] = print,
                 overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Run (or resume) the whole job; returns ``{'root', 'records', 'summary'}``.

    With ``labels.source: annotate`` the run stops after ``select`` until every image in
    ``<out>/annotate/to_annotate.csv`` has a class: it writes the annotation page there and
    returns ``{'root', 'records', 'summary': None, 'awaiting_labels': message}``.

    Parameters
    ----------
    config : path or dict
        A pipeline YAML (see ``usb_configs/digits/pipeline.yaml``).
    out : path, optional
        Run directory; default ``results/<name>``.
    force : iterable of str
        Stage names to re-run even if cached (``"all"`` for every stage).
    """
    from .errors import LabelsError
    from .io import atomic_write_bytes, atomic_write_text
    cfg = load_config(config, overrides=overrides)
    root = Path(out) if out is not None else Path("results") / cfg["name"]
    t0 = time.perf_counter()
    cfg = with_annotation_path(cfg, root)
    with run_lock(root):
        stages = build_stages(cfg)
        lab = cfg["labels"]
        if lab["source"] == "annotate":
            before = stages[:[s.name for s in stages].index("labels")]
            records = run_stages(before, root, log=log, force=[
                f for f in force if f == "all" or f in {s.name for s in before}])
            ann = prepare_annotation(records["select"], root, before[0].env)
            if ann.num_labeled < ann.idx.size:
                return {"root": root, "records": records, "summary": None,
                        "awaiting_labels": _awaiting_message(ann, config, out,
                                                             cfg.get("data_dir"))}
            stages = build_stages(cfg)  # the labels file now exists: its checksum is the key
        if lab["source"] == "csv" and not Path(lab["path"]).is_file():
            before = stages[:[s.name for s in stages].index("labels")]
            records = run_stages(before, root, log=log, force=[
                f for f in force if f == "all" or f in {s.name for s in before}])
            todo = records["select"].path("to_annotate.csv")
            raise LabelsError(f"labels file not found; fill the label column of {todo} "
                              f"({cfg['num_labels']} rows) and save it as this file, then "
                              "re-run the same command", path=lab["path"])
        records = run_stages(stages, root, force=force, log=log)
        wall = time.perf_counter() - t0
        ev = records["evaluate"]
        for name in (METRICS,) + PLOTS:
            atomic_write_bytes(root / name, ev.path(name).read_bytes())
        text = summary_markdown(cfg, records, root.resolve(), wall)
        atomic_write_text(root / "summary.md", text)
    return {"root": root, "records": records, "summary": text}
