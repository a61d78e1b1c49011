"""``as3l bench``: samplers × SSL algorithms × label budgets × seeds, the paper's tables.

Grid and cells
--------------
A *cell* is one USB training: ``(sampler, algorithm, labels per class, seed)`` at the same
number of iterations for every cell. Around the cells, everything is a cached stage
(:mod:`as3l_plugin.stages`) running the stage functions of :mod:`as3l_plugin.pipeline` (same
code, same cache keys):

- per seed: ``pretrain → features`` under ``<out>/shared/seed<S>/`` (shared by every cell
  of that seed), or once under ``<out>/shared/pretrain_seed<P>/`` for every seed when
  ``pretrain_seed: P`` is set (one self-supervised model, as the paper trains; the stage
  directory may be copied between bench directories: its key is the same), and ``finetune`` per seed and budget under ``<out>/shared/seed<S>/b<B>/``
  (the paper ties the K of Eq. 1 to the budget; set ``finetune.k`` to share one);
- per (seed, sampler, budget): ``select → labels`` (the dataset's labels: simulation) and
  one ``prior_<propagator>`` stage per propagator, under ``<out>/labels/seed<S>/<sampler>_b<B>/``;
  an ``as3l_flexmatch`` algorithm trains with the prior its ``prior:`` key names (default: the
  first propagator); all of them feed the prior tables. A ``samplers`` entry is
  ``name: {params}`` for a registered sampler, or ``name: {sampler: registered name, params}``
  for a variant under its own name (e.g. ``as3l_density: {sampler: as3l, variant: density}``);
  ``propagators`` entries likewise (``seeded_kmeans_uniform: {propagator: seeded_kmeans,
  uncovered: uniform}``);
- per cell: a ``train`` stage under ``<out>/cells/<cell>/`` (resumes from USB's latest
  checkpoint after a kill).

Each finished cell appends one row to ``<out>/cells.csv`` (rewritten atomically); a cell
whose row carries the current cell key is skipped on a re-run, so the bench can be killed and
restarted at any time. Cells run in priority order (the ``priority`` pairs first, for every
seed, then the rest), seed-major, so a partial run already holds complete paired comparisons.

Merging
-------
A grid split over several processes (``usb_configs/digits/bench_{1,4}perclass.yaml``, one
bench directory each) is reported as one: :meth:`Bench.merge` imports the finished rows of
other bench directories into ``<out>``'s ``cells.csv`` / ``priors.csv`` (their curves stay
where they are, referenced by relative path) and rebuilds the report; a later run in
``<out>`` skips every imported cell whose key matches.

Report
------
``<out>/tables.md`` (mean ± std over seeds) and ``<out>/plots/*.png``, rebuilt from
``cells.csv``, ``priors.csv`` and the cells' ``metrics.csv`` after every cell:

- Table 1: final and best test accuracy per sampler × algorithm × budget, and (1c) the
  accuracy after 10 % of the iterations (how fast: Table 2 saturates when a cell passes
  the reference at its first evaluation);
- Table 2: iterations to reach the reference's (FlexMatch-random's) final accuracy, per
  seed and budget, and the speed-up ``num_train_iter / iterations``;
- Table 3: per-class test accuracy at each cell's last evaluation, from the confusion matrix
  USB logs (:func:`as3l_plugin.report.final_confusion`);
- Tables 4–6: prior accuracy (unlabeled samples), class coverage and ECE per sampler ×
  propagator × budget;
- Table 1d: every finished cell's final (best) accuracy per budget and seed;
- Table 1e: the mean accuracy of the evaluations in the last 20 % of the iterations (the end
  of a run without one evaluation's swing; the targets section pairs it by seed too);
- targets (with ``method: [sampler, algorithm]``): that cell against the best of ``peers``
  (default: the pairs sharing neither its sampler nor its algorithm), paired by seed: the
  difference of final accuracy, the seeds it is ahead on, and the iteration at which it first
  reaches the reference's final accuracy;
- Table 1f (with ``prior_effect: [algorithm, algorithm with the prior]``): what the prior
  does on the same labels, the second algorithm minus the first per sampler, budget and seed.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import deep_merge
from .errors import ConfigError
from . import pipeline as pl
from .stages import (RUNNING_FILE, Stage, StageRecord, cache_key, lock_held, run_lock,
                     run_stage, run_stages)

CELLS_CSV = "cells.csv"
PRIORS_CSV = "priors.csv"
TABLES_MD = "tables.md"
TRAIN_STAGE = "train"  # a cell's training stage: its name and its directory under the cell
CELL_COLUMNS = ["cell", "dataset", "sampler", "algorithm", "labels_per_class", "budget", "seed",
                "num_train_iter", "final_acc", "best_acc", "best_it", "last_it", "coverage",
                "prior_acc", "ece", "wall_s", "cpu_s", "key", "metrics"]
PRIOR_COLUMNS = ["dataset", "sampler", "propagator", "labels_per_class", "budget", "seed",
                 "coverage", "prior_acc", "ece", "key"]
_PRIOR_KEYS = ("sampler", "propagator", "budget", "seed")  # one prior row per labeled set
EARLY_FRACTION = 0.1  # Table 1c: accuracy after this fraction of the iterations
LATE_FRACTION = 0.8   # Table 1e: mean accuracy of the evaluations from this fraction on

BENCH_DEFAULTS: Dict[str, Any] = {
    "name": "",
    "dataset": None,
    "data_dir": None,
    "img_size": None,         # folder / arrays: see the pipeline config
    "channels": None,
    "skip_bad_images": False,
    "net": "cnn4",
    "device": "cpu",
    "seeds": [0, 1, 2],
    "pretrain_seed": None,    # int: one self-supervised model for every seed (the paper's)
    "labels_per_class": [1, 4],
    "samplers": {"as3l": {}, "random": {}, "kmedoids": {}, "coreset": {}, "typiclust": {},
                 "probcover": {}},
    "select_features": "self",
    "propagators": {"seeded_kmeans": {}},
    "prior_features": "self",
    "algorithms": None,       # name -> {config: USB base YAML, ...USB overrides}
    "reference": ["random", "flexmatch"],
    "method": None,           # [sampler, algorithm]: the cell the targets table pits against
    "peers": None,            # [[sampler, algorithm], ...]; None: every pair sharing neither
    "prior_effect": None,     # [algorithm, the same with the prior]: Table 1f pairs them
    "priority": [],
    "pretrain": {},
    "features": {},
    "finetune": {},
    "usb": {},
    "quick": {},
}


# =========================================================================== config
def _as_named(value, what: str, full: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``{name: params}`` from a mapping, or a list of names (picked from ``full``)."""
    if isinstance(value, Mapping):
        return {str(k): dict(v or {}) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out = {}
        for name in value:
            if full is not None and name not in full:
                raise ConfigError(f"{name!r} is not in the full grid {sorted(full)}", field=what)
            out[str(name)] = dict((full or {}).get(name) or {})
        return out
    raise ConfigError(f"expected a mapping name -> params or a list of names, got {value!r}",
                      field=what)


def load_bench_config(source, *, quick: bool = False,
                      overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Load a bench YAML (or dict); ``quick`` merges its ``quick:`` block on top.

    In the ``quick`` block, ``samplers``, ``algorithms`` and ``propagators`` may be lists of
    names picked from the full grid. USB base configs are resolved against the YAML's folder.
    """
    from .config import check_base_config, read_job_config
    raw, where, base_dir = read_job_config(source, "bench", overrides=overrides)
    cfg = dict(BENCH_DEFAULTS)
    cfg.update(raw)
    from .datasets import list_datasets
    if cfg["dataset"] not in list_datasets():
        raise ConfigError(f"={cfg['dataset']!r}; known datasets: {', '.join(list_datasets())}",
                          path=where, field="dataset")
    if not cfg["algorithms"]:
        raise ConfigError("is required: name -> {config: USB base YAML, overrides...}",
                          path=where, field="algorithms")
    from .validate import check_device
    check_device(cfg["device"], "device", error=ConfigError, path=where)
    for section, key in (("samplers", "sampler"), ("propagators", "propagator")):
        cfg[section] = _as_named(cfg[section], section)
        for name, params in cfg[section].items():   # `alias: {sampler: as3l, variant: ...}`
            base = params.get(key, name)
            if not isinstance(base, str) or not base:
                raise ConfigError(f"{key}={base!r} must be the name of a registered {key}",
                                  path=where, field=f"{section}.{name}.{key}")
    cfg["algorithms"] = _as_named(cfg["algorithms"], "algorithms")
    cfg["reference"] = _pair(cfg["reference"], cfg, where, "reference", check_grid=False)
    cfg["method"], cfg["peers"] = _targets_config(cfg, where)
    cfg["prior_effect"] = _prior_effect_config(cfg, where)
    if quick:
        q = dict(cfg.get("quick") or {})
        for key in ("samplers", "propagators", "algorithms"):
            if key in q:
                cfg[key] = _as_named(q.pop(key), f"quick.{key}", cfg[key])
        for k, v in q.items():
            cfg[k] = deep_merge(cfg[k], v) if isinstance(cfg[k], dict) and isinstance(v, dict) \
                else v
    if quick and cfg["method"] is not None:  # the pairs of the full grid the quick one has
        have = lambda p: p[0] in cfg["samplers"] and p[1] in cfg["algorithms"]  # noqa: E731
        peers = [p for p in cfg["peers"] if have(p)]
        if not (have(cfg["method"]) and peers):
            cfg["method"], peers = None, None
        cfg["peers"] = peers
    if quick and cfg["prior_effect"] is not None \
            and not set(cfg["prior_effect"]) <= set(cfg["algorithms"]):
        cfg["prior_effect"] = None
    if not cfg["propagators"]:
        raise ConfigError("needs at least one propagator", path=where, field="propagators")
    for name, alg in cfg["algorithms"].items():
        prior = alg.get("prior")
        if prior is not None and prior not in cfg["propagators"]:
            raise ConfigError(f"={prior!r} is not one of the propagators "
                              f"{sorted(cfg['propagators'])}", path=where,
                              field=f"algorithms.{name}.prior")
        if not alg.get("config"):
            raise ConfigError("needs config: a USB base YAML", path=where,
                              field=f"algorithms.{name}")
        p = base_dir / alg["config"]
        if not p.is_file():
            raise ConfigError(f"USB base config {p} not found", path=where,
                              field=f"algorithms.{name}.config")
        check_base_config(p)
        alg["config"] = str(p)
        managed = sorted(set(alg) & set(pl.USB_MANAGED))
        if managed:
            raise ConfigError(f"key(s) {managed} are set by the bench", path=where,
                              field=f"algorithms.{name}")
    if cfg["prior_effect"] is not None:
        without, with_ = (uses_prior(usb_conf(cfg, a)) for a in cfg["prior_effect"])
        if without or not with_:
            raise ConfigError(f"={list(cfg['prior_effect'])!r}: the first algorithm must train "
                              "without the prior, the second with it (as3l_*)", path=where,
                              field="prior_effect")
    p = cfg["pretrain_seed"]
    if p is not None and not (isinstance(p, int) and not isinstance(p, bool) and p >= 0):
        raise ConfigError(f"={p!r} must be null (one model per seed) or an integer >= 0",
                          path=where, field="pretrain_seed")
    for key in ("seeds", "labels_per_class"):
        vals = cfg[key]
        if (not isinstance(vals, list) or not vals
                or not all(isinstance(v, int) and v >= 0 for v in vals)):
            raise ConfigError(f"={vals!r} must be a non-empty list of integers", path=where,
                              field=key)
    if 0 in cfg["labels_per_class"]:
        raise ConfigError("labels per class must be >= 1", path=where, field="labels_per_class")
    cfg["reference"] = list(_pair(cfg["reference"], cfg, where, "reference", check_grid=False))
    cfg["priority"] = [tuple(map(str, p)) for p in (cfg["priority"] or [])]
    for sec in ("select_features", "prior_features"):
        pl.check_feature_set(cfg[sec], path=where, field=sec)
    if not cfg["name"]:
        cfg["name"] = (where.stem if where is not None else "bench") + ("_quick" if quick else "")
    return cfg


def _pair(value, cfg, where, field: str, *, check_grid: bool = True) -> Tuple[str, str]:
    """``[sampler, algorithm]`` as a tuple, checked against the grid's samplers and
    algorithms unless ``check_grid`` is False."""
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ConfigError(f"={value!r} must be [sampler, algorithm]", path=where, field=field)
    s, a = map(str, value)
    if check_grid and (s not in cfg["samplers"] or a not in cfg["algorithms"]):
        raise ConfigError(f"={[s, a]!r}: samplers are {sorted(cfg['samplers'])}, algorithms "
                          f"{sorted(cfg['algorithms'])}", path=where, field=field)
    return s, a


Pair = Tuple[str, str]


def _targets_config(cfg, where) -> Tuple[Optional[Pair], Optional[List[Pair]]]:
    """``method`` and ``peers`` of the targets table, checked against the (full) grid; the
    default peers are the pairs sharing neither the method's sampler nor its algorithm."""
    if cfg["method"] is None:
        if cfg["peers"] is not None:
            raise ConfigError("needs method: [sampler, algorithm] beside it", path=where,
                              field="peers")
        return None, None
    method = _pair(cfg["method"], cfg, where, "method")
    if method == tuple(cfg["reference"]):
        raise ConfigError(f"={list(method)!r} is the reference: the targets table measures "
                          "the method against it", path=where, field="method")
    if cfg["peers"] is None:
        peers = [(s, a) for s in cfg["samplers"] for a in cfg["algorithms"]
                 if s != method[0] and a != method[1]]
        if not peers:
            raise ConfigError("every pair of the grid shares the method's sampler or "
                              "algorithm: name the peers", path=where, field="peers")
        return method, peers
    if not isinstance(cfg["peers"], (list, tuple)) or not cfg["peers"]:
        raise ConfigError(f"={cfg['peers']!r} must be a non-empty list of [sampler, algorithm]",
                          path=where, field="peers")
    peers = [_pair(p, cfg, where, f"peers[{i}]") for i, p in enumerate(cfg["peers"])]
    if method in peers:
        raise ConfigError(f"lists the method {list(method)!r} itself", path=where, field="peers")
    return method, peers


def usb_conf(cfg: Mapping[str, Any], alg: str) -> Dict[str, Any]:
    """The USB config of the algorithm ``alg`` of a loaded bench config
    (:func:`as3l_plugin.pipeline.usb_config`: its base YAML < ``usb:`` < its own keys)."""
    spec = cfg["algorithms"][alg]
    return pl.usb_config(spec["config"], cfg["usb"],
                         {k: v for k, v in spec.items() if k not in ("config", "prior")})


def uses_prior(conf: Mapping[str, Any]) -> bool:
    """Whether a USB config's algorithm trains with the prior (``as3l_*``)."""
    return str(conf["algorithm"]).startswith("as3l")


def _prior_effect_config(cfg, where) -> Optional[Tuple[str, str]]:
    """``prior_effect: [without, with]``, two different algorithms of the (full) grid, as a
    tuple; None when not set."""
    value = cfg["prior_effect"]
    if value is None:
        return None
    algs = sorted(cfg["algorithms"])
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(a, str) and a in cfg["algorithms"] for a in value)
            and value[0] != value[1]):
        raise ConfigError(f"={value!r} must be [algorithm, the same algorithm with the prior]: "
                          f"two different names of {algs}", path=where, field="prior_effect")
    return str(value[0]), str(value[1])


# =========================================================================== cells
def cell_id(sampler: str, algorithm: str, budget: int, seed: int) -> str:
    return f"{sampler}-{algorithm}-b{budget}-s{seed}"


def plan_cells(cfg: Mapping[str, Any], num_classes: int) -> List[Dict[str, Any]]:
    """Every cell of the grid, in run order (priority pairs first; seed-major)."""
    prio = {tuple(p): i for i, p in enumerate(cfg["priority"])}
    cells = []
    for s_rank, seed in enumerate(cfg["seeds"]):
        for b_rank, lpc in enumerate(cfg["labels_per_class"]):
            for sampler in cfg["samplers"]:
                for alg in cfg["algorithms"]:
                    rank = prio.get((sampler, alg), len(prio))
                    grp = 0 if rank < len(prio) else 1
                    cells.append({"cell": cell_id(sampler, alg, lpc * num_classes, seed),
                                  "sampler": sampler, "algorithm": alg,
                                  "labels_per_class": lpc, "budget": lpc * num_classes,
                                  "seed": seed, "_order": (grp, s_rank, b_rank, rank)})
    cells.sort(key=lambda c: c["_order"])
    for c in cells:
        c.pop("_order")
    return cells


def read_rows(path: Path) -> List[Dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def upsert_rows(path: Path, columns: Sequence[str], new: Iterable[Mapping[str, Any]],
                keys: Sequence[str]) -> None:
    """Replace the rows with the same ``keys`` (or append), rewriting the file atomically."""
    from .io import atomic_write_csv
    new = list(new)
    ident = {tuple(str(r[k]) for k in keys) for r in new}
    rows = [r for r in read_rows(path) if tuple(r.get(k, "") for k in keys) not in ident]
    rows += new
    atomic_write_csv(path, columns, ([r.get(c, "") for c in columns] for r in rows))


def upsert_row(path: Path, columns: Sequence[str], row: Mapping[str, Any],
               keys: Sequence[str]) -> None:
    """Replace the row with the same ``keys`` (or append), rewriting the file atomically."""
    upsert_rows(path, columns, [row], keys)


# =========================================================================== running
class Bench:
    """One bench run directory: plans cells, runs the missing ones, writes the report.

    Parameters
    ----------
    cfg : dict
        From :func:`load_bench_config`.
    out : path
        The bench directory (``results/bench_<name>`` by default).
    """

    def __init__(self, cfg: Mapping[str, Any], out, *, log: Callable[[str], None] = print):
        self.cfg = dict(cfg)
        self.out = Path(out)
        self.log = log
        self.env = pl.dataset_env(cfg)
        self._shared: Dict[int, Dict[str, StageRecord]] = {}
        self._finetuned: Dict[Tuple[int, int], Dict[str, StageRecord]] = {}
        self._labels: Dict[Tuple[int, str, int], Dict[str, StageRecord]] = {}
        self._usb: Dict[str, Dict[str, Any]] = {}
        self._class_names: Optional[List[str]] = None

    # ----------------------------------------------------------------- stages
    def num_classes(self) -> int:
        return int(pl.env_dataset(self.env).num_classes)

    def class_names(self) -> List[str]:
        """The dataset's class names (Table 3's columns), loaded once per bench."""
        if self._class_names is None:
            from .datasets import class_names
            self._class_names = class_names(pl.env_dataset(self.env))
        return self._class_names

    def _feature_cfg(self, seed: int, budget: int) -> Dict[str, Any]:
        return {"dataset": self.cfg["dataset"], "net": self.cfg["net"], "seed": seed,
                "num_labels": budget, "pretrain": self.cfg["pretrain"],
                "features": self.cfg["features"], "finetune": self.cfg["finetune"]}

    def shared(self, seed: int, budget: int) -> Dict[str, StageRecord]:
        """pretrain → features per seed, finetune per seed and budget (cached on disk):
        the clusters of Eq. 1 follow the budget unless ``finetune.k`` is set."""
        if seed not in self._shared:
            p = self.cfg["pretrain_seed"]
            pseed, where = (seed, f"seed{seed}") if p is None else (p, f"pretrain_seed{p}")
            stages = pl.feature_stages(self._feature_cfg(pseed, budget), self.env)[:2]
            self._shared[seed] = run_stages(stages, self.out / "shared" / where,
                                            log=self._sub(f"seed {seed}"))
        key = (seed, budget)
        if key not in self._finetuned:
            stages = pl.feature_stages(self._feature_cfg(seed, budget), self.env,
                                       uses=(self.cfg["select_features"],
                                             self.cfg["prior_features"]))[2:]
            self._finetuned[key] = run_stages(
                stages, self.out / "shared" / f"seed{seed}" / f"b{budget}",
                upstream=self._shared[seed], log=self._sub(f"seed {seed} b{budget}"))
        return self._finetuned[key]

    def labels(self, seed: int, sampler: str, budget: int) -> Dict[str, StageRecord]:
        """select → labels (oracle) → one prior per propagator, for one labeled set."""
        k = (seed, sampler, budget)
        if k in self._labels:
            return self._labels[k]
        from .io import index_filename
        up = self.shared(seed, budget)
        params = dict(self.cfg["samplers"][sampler])
        base = params.pop("sampler", sampler)   # `name: {sampler: as3l, variant: density}`
        feat_in = pl.feature_inputs(self.cfg["select_features"])
        prior_in = pl.feature_inputs(self.cfg["prior_features"])
        stages = [
            Stage("select", pl.stage_select, inputs=feat_in,
                  params={"sampler": base, "params": params,
                          "features": self.cfg["select_features"], "budget": budget,
                          "seed": seed},
                  outputs=(index_filename(budget, seed),), env=self.env),
            Stage("labels", pl.stage_labels, inputs=("select",),
                  params={"dataset": self.cfg["dataset"], "source": "dataset", "file": None},
                  outputs=(pl.LABELS,), env=self.env),
        ]
        for prop, params in self.cfg["propagators"].items():
            params = dict(params)
            base = params.pop("propagator", prop)   # `name: {propagator: seeded_kmeans, ...}`
            stages.append(Stage(
                f"prior_{prop}", pl.stage_prior, inputs=("labels",) + prior_in,
                params={"propagator": base, "params": params,
                        "features": self.cfg["prior_features"], "seed": seed},
                outputs=(pl.PRIOR,), env=self.env))
        recs = run_stages(stages, self.out / "labels" / f"seed{seed}" / f"{sampler}_b{budget}",
                          upstream=up, log=self._sub(f"seed {seed} {sampler} b{budget}"))
        lpc = budget // max(1, self.num_classes_)
        for prop in self.cfg["propagators"]:
            r = recs[f"prior_{prop}"]
            upsert_row(self.out / PRIORS_CSV, PRIOR_COLUMNS, {
                "dataset": self.cfg["dataset"], "sampler": sampler, "propagator": prop,
                "labels_per_class": lpc, "budget": budget, "seed": seed,
                "coverage": recs["labels"].result["coverage"],
                "prior_acc": f"{r.result['prior_acc']:.6f}", "ece": f"{r.result['ece']:.6f}",
                "key": r.key}, keys=_PRIOR_KEYS)
        self._labels[k] = recs
        return recs

    def usb_conf(self, alg: str) -> Dict[str, Any]:
        if alg not in self._usb:
            self._usb[alg] = usb_conf(self.cfg, alg)
        return self._usb[alg]

    def train_prior(self, alg: str) -> str:
        """The propagator whose prior the cells of ``alg`` train with (``as3l_*``) and report:
        the algorithm's ``prior:`` key, else the first propagator."""
        return self.cfg["algorithms"][alg].get("prior") or next(iter(self.cfg["propagators"]))

    def cell_stage(self, cell: Mapping[str, Any]) -> Tuple[Stage, Dict[str, StageRecord]]:
        seed, budget = cell["seed"], cell["budget"]
        shared = self.shared(seed, budget)
        labels = self.labels(seed, cell["sampler"], budget)
        conf = self.usb_conf(cell["algorithm"])
        ups = {"select": labels["select"]}
        inputs = ["select"]
        if uses_prior(conf):
            ups["prior"] = labels[f"prior_{self.train_prior(cell['algorithm'])}"]
            inputs.append("prior")
        if conf["use_pretrain"]:
            ups["pretrain"] = shared["pretrain"]
            inputs.append("pretrain")
        managed = {"dataset": self.cfg["dataset"], "net": self.cfg["net"],
                   "num_labels": budget, "seed": seed}
        st = Stage(TRAIN_STAGE, pl.stage_train, inputs=tuple(inputs),
                   params={"usb": conf, "managed": managed},
                   outputs=(f"{pl.SAVE_NAME}/{pl.METRICS}",), resumable=True, env=self.env)
        return st, ups

    # ----------------------------------------------------------------- main loop
    def run(self, *, max_cells: Optional[int] = None, report_only: bool = False) -> Dict[str, Any]:
        """Run the missing cells (at most ``max_cells``), then write the report."""
        from tqdm.auto import tqdm
        self.out.mkdir(parents=True, exist_ok=True)
        with run_lock(self.out):
            self.num_classes_ = self.num_classes()
            cells = plan_cells(self.cfg, self.num_classes_)
            done = {r["cell"]: r for r in read_rows(self.out / CELLS_CSV)}
            ran = 0
            if not report_only:
                bar = tqdm(cells, desc="bench cells", unit="cell", dynamic_ncols=True)
                seen = set()
                for cell in bar:
                    bar.set_postfix_str(cell["cell"])
                    if cell["seed"] not in seen:  # every labeled set + prior of this seed
                        seen.add(cell["seed"])    # (cheap; fills the prior tables early)
                        for lpc in self.cfg["labels_per_class"]:
                            for sampler in self.cfg["samplers"]:
                                self.labels(cell["seed"], sampler, lpc * self.num_classes_)
                    st, ups = self.cell_stage(cell)
                    key = cache_key(st.name, dict(st.params),
                                    {n: ups[n].fingerprint for n in st.inputs})
                    if cell["cell"] in done and done[cell["cell"]].get("key") == key:
                        continue
                    if max_cells is not None and ran >= max_cells:
                        self.log(f"stopping after {ran} cell(s) (--max-cells); re-run to go on")
                        break
                    self._run_cell(cell, st, ups)
                    ran += 1
                    self.report(cells)
                bar.close()
            paths = self.report(cells)
        return {"out": self.out, "cells": len(cells), "ran": ran, **paths}

    def status(self) -> List[Dict[str, Any]]:
        """Each planned cell's state, read from the files under ``out``; runs nothing and
        writes nothing there (the dataset is opened for its number of classes, so a ``folder``
        dataset may build its cache, as any command reading it does).

        Returns one dict per cell of :func:`plan_cells` (run order), with its ``cell`` id,
        ``sampler``, ``algorithm``, ``labels_per_class``, ``seed`` and

        - ``state``: ``"done"`` (a row of ``cells.csv``), ``"training"`` (a ``metrics.csv``,
          no row yet: a process is training it or stopped while training it), ``"started"``
          (its training stage began, no evaluation logged yet) or ``"pending"``;
        - ``iteration`` (int, the last evaluated; None without one), ``num_train_iter`` (int),
          ``acc`` (float in [0, 1] at ``iteration``; NaN without one) and ``best`` (float, the
          best so far; NaN likewise);
        - ``checkpoint`` (bool): USB's checkpoint is on disk, so a re-run resumes from it if
          the cell's key still matches.

        A done row is reported as recorded; whether its key still matches the config is
        checked only by a run.
        """
        from . import report as rp
        cells = plan_cells(self.cfg, self.num_classes())
        done = {r["cell"]: r for r in read_rows(self.out / CELLS_CSV)}
        out = []
        for c in cells:
            its = int(self.usb_conf(c["algorithm"])["num_train_iter"])
            st = {k: c[k] for k in ("cell", "sampler", "algorithm", "labels_per_class", "seed")}
            stage_dir = self._cell_root(c["cell"]) / TRAIN_STAGE
            usb = stage_dir / pl.SAVE_NAME
            st.update(state="pending", iteration=None, num_train_iter=its, acc=float("nan"),
                      best=float("nan"), checkpoint=(usb / pl.CHECKPOINT).is_file())
            row = done.get(c["cell"])
            if row is not None:
                n_it = _f(row, "num_train_iter")
                its = int(n_it) if math.isfinite(n_it) else its
                last = _f(row, "last_it")
                st.update(state="done", iteration=int(last) if math.isfinite(last) else its,
                          num_train_iter=its, acc=_f(row, "final_acc"),
                          best=_f(row, "best_acc"))
            elif (usb / pl.METRICS).is_file():
                st["state"] = "training"
                try:
                    it, acc = rp.read_metrics(usb / pl.METRICS)
                except (OSError, ValueError):          # unreadable: state only
                    it, acc = [], []
                if len(it):
                    st.update(iteration=int(it[-1]), acc=float(acc[-1]),
                              best=float(np.max(acc)))
            elif (stage_dir / RUNNING_FILE).is_file():
                st["state"] = "started"
            out.append(st)
        return out

    def status_text(self) -> str:
        """:meth:`status` as text: a count line (and whether a process holds the directory's
        lock now), then a Markdown table of the cells in run order."""
        from . import report as rp
        rows = self.status()
        n = {k: sum(r["state"] == k for r in rows)
             for k in ("done", "training", "started", "pending")}
        held = lock_held(self.out)
        busy = {True: "a process is writing it now", False: "no process is writing it",
                None: "whether a process is writing it is unknown"}[held]
        head = (f"bench {self.cfg['name']} in {self.out}: {n['done']} of {len(rows)} cells done, "
                f"{n['training']} training, {n['started']} started (no evaluation yet), "
                f"{n['pending']} not started; {busy}")
        trs = [[r["cell"], r["state"] + (" (checkpoint)" if r["state"] == "training"
                                         and r["checkpoint"] else ""),
                "" if r["iteration"] is None else f"{r['iteration']}/{r['num_train_iter']}",
                rp.pct(r["acc"]) if r["iteration"] is not None else "",
                rp.pct(r["best"]) if r["iteration"] is not None else ""] for r in rows]
        return head + "\n\n" + rp.markdown_table(
            ["cell", "state", "iteration", "test acc (%)", "best (%)"], trs)

    def has_run(self) -> bool:
        """Whether ``out`` holds anything a bench writes (its CSVs or stage directories)."""
        return any((self.out / n).exists()
                   for n in (CELLS_CSV, PRIORS_CSV, "shared", "labels", "cells"))

    def _cell_root(self, cell_id: str) -> Path:
        """A cell's directory; its training stage is the subdirectory ``train``."""
        return self.out / "cells" / cell_id

    def _run_cell(self, cell, st, ups) -> None:
        from . import report as rp
        root = self._cell_root(cell["cell"])
        rec = run_stage(st, root, ups, log=self._sub(cell["cell"]))
        curve = rp.read_metrics(rec.path(f"{pl.SAVE_NAME}/{pl.METRICS}"))
        best, best_it = rp.best_accuracy(curve)
        labels = self.labels(cell["seed"], cell["sampler"], cell["budget"])
        pr = labels[f"prior_{self.train_prior(cell['algorithm'])}"].result
        upsert_row(self.out / CELLS_CSV, CELL_COLUMNS, {
            **cell, "dataset": self.cfg["dataset"],
            "num_train_iter": st.params["usb"]["num_train_iter"],
            "final_acc": f"{rp.final_accuracy(curve):.6f}", "best_acc": f"{best:.6f}",
            "best_it": best_it, "last_it": int(curve[0][-1]) if len(curve[0]) else 0,
            "coverage": labels["labels"].result["coverage"],
            "prior_acc": f"{pr['prior_acc']:.6f}", "ece": f"{pr['ece']:.6f}",
            "wall_s": f"{rec.wall_s:.1f}", "cpu_s": f"{rec.cpu_s:.1f}",
            "key": rec.key,
            "metrics": str(rec.path(f"{pl.SAVE_NAME}/{pl.METRICS}").relative_to(self.out))},
            keys=("cell",))

    def merge(self, sources: Sequence[Any]) -> Dict[str, Any]:
        """Import the finished cells and priors of other bench directories, then report.

        Parameters
        ----------
        sources : sequence of path
            Bench directories of the same dataset (each holding ``cells.csv``, and
            ``priors.csv`` when priors were made). Rows of ``<out>`` with the same cell (or
            the same sampler, propagator, budget and seed for priors) are replaced.

        Raises
        ------
        InputError
            A source is not a bench directory (no ``cells.csv``), or is ``<out>`` itself.
        ConfigError
            A source holds another dataset, or two sources hold the same cell with
            different keys (two different runs: keep one).
        """
        import os
        from .errors import InputError
        self.out.mkdir(parents=True, exist_ok=True)
        cells: Dict[str, Dict[str, str]] = {}
        priors: Dict[Tuple[str, ...], Dict[str, str]] = {}
        origin: Dict[str, Path] = {}
        for src in map(Path, sources):
            path = src / CELLS_CSV
            if not path.is_file():
                raise InputError(f"no {CELLS_CSV} here: not a bench directory", path=src)
            if src.resolve() == self.out.resolve():
                raise InputError("is the output directory itself; merge other bench "
                                 "directories into it", path=src)
            for path, rows in ((path, read_rows(path)), (src / PRIORS_CSV,
                                                         read_rows(src / PRIORS_CSV))):
                bad = sorted({r.get("dataset", "") for r in rows} - {self.cfg["dataset"]})
                if bad:
                    raise ConfigError(f"holds dataset {bad[0]!r}, the config "
                                      f"{self.cfg['dataset']!r}", path=path, field="dataset")
            for r in read_rows(src / CELLS_CSV):
                prev = cells.get(r["cell"])
                if prev is not None and prev["key"] != r["key"]:
                    raise ConfigError(f"cell {r['cell']} is in {origin[r['cell']]} too, from "
                                      "another run (other key): merge one of them",
                                      path=src / CELLS_CSV)
                r = dict(r, metrics=os.path.relpath(src / r["metrics"], self.out))
                cells[r["cell"]], origin[r["cell"]] = r, src
            for r in read_rows(src / PRIORS_CSV):
                priors[tuple(r[k] for k in _PRIOR_KEYS)] = r
        with run_lock(self.out):
            upsert_rows(self.out / CELLS_CSV, CELL_COLUMNS, cells.values(), ("cell",))
            upsert_rows(self.out / PRIORS_CSV, PRIOR_COLUMNS, priors.values(), _PRIOR_KEYS)
        self.log(f"merged {len(cells)} cell(s) and {len(priors)} prior row(s) from "
                 f"{len(sources)} bench director{'y' if len(sources) == 1 else 'ies'} into {self.out}")
        return self.run(report_only=True)

    def report(self, cells: Optional[Sequence[Mapping[str, Any]]] = None) -> Dict[str, Any]:
        """Rebuild ``tables.md`` and the plots from the rows on disk."""
        from .io import atomic_write_text
        rows = read_rows(self.out / CELLS_CSV)
        priors = read_rows(self.out / PRIORS_CSV)
        curves = _Curves(self.out)          # tables and plots share one read per cell
        text = bench_tables(self.cfg, rows, priors, planned=len(cells) if cells else None,
                            out=self.out, class_names=self.class_names(), curves=curves)
        atomic_write_text(self.out / TABLES_MD, text)
        plots = bench_plots(self.cfg, rows, self.out, curves=curves)
        return {"tables": self.out / TABLES_MD, "plots": plots, "text": text}

    def _sub(self, what: str) -> Callable[[str], None]:
        return lambda msg: self.log(f"  [{what}] {msg}")


# =========================================================================== tables, plots
def _f(r: Mapping[str, str], k: str) -> float:
    try:
        return float(r[k])
    except (KeyError, TypeError, ValueError):
        return float("nan")


class _Curves:
    """The accuracy curves of a report's cells, each ``metrics.csv`` read once.

    ``curves(row)`` is the curve of a ``cells.csv`` row (:func:`report.read_metrics`), or
    None without ``out``, without the row's ``metrics`` path, or when that file cannot be read
    (a deleted cell directory: the row's numbers still count)."""

    def __init__(self, out: Optional[Path]):
        self.out = None if out is None else Path(out)
        self._read: Dict[str, Any] = {}

    def __call__(self, row: Mapping[str, str]):
        rel = row.get("metrics")
        if self.out is None or not rel:
            return None
        if rel not in self._read:
            from . import report as rp
            try:
                self._read[rel] = rp.read_metrics(self.out / rel)
            except (OSError, ValueError):   # a missing or unreadable file (InputError)
                self._read[rel] = None
        return self._read[rel]


def _in_grid(cfg: Mapping[str, Any], row: Mapping[str, str], kind: str = "algorithm") -> bool:
    """Whether a ``cells.csv`` row (``kind='algorithm'``) or a ``priors.csv`` row
    (``kind='propagator'``) belongs to the config's grid."""
    return (row["sampler"] in cfg["samplers"] and row[kind] in cfg[kind + "s"]
            and int(row["labels_per_class"]) in cfg["labels_per_class"]
            and int(row["seed"]) in cfg["seeds"])


def bench_tables(cfg: Mapping[str, Any], rows: Sequence[Mapping[str, str]],
                 priors: Sequence[Mapping[str, str]], *, planned: Optional[int] = None,
                 out: Optional[Path] = None, class_names: Optional[Sequence[str]] = None,
                 curves: Optional[_Curves] = None) -> str:
    """The Markdown report: Tables 1, 2 and 4–6 (mean ± std over seeds), and Table 3 (per-class
    test accuracy at the last evaluation) when ``out`` and ``class_names`` are given.
    ``curves``: the cells' curves under ``out`` (:class:`_Curves`; one is made if None).

    Only the rows of the config's grid count (its samplers, algorithms, budgets and seeds; for
    priors, its propagators): a directory merged from wider benches, or a ``--seeds`` subset,
    reports that grid and says how many rows it left out."""
    from . import report as rp
    samplers = list(cfg["samplers"])
    algs = list(cfg["algorithms"])
    lpcs = list(cfg["labels_per_class"])
    n_rows = len(rows)
    rows = [r for r in rows if _in_grid(cfg, r)]
    priors = [p for p in priors if _in_grid(cfg, p, "propagator")]
    by = {(r["sampler"], r["algorithm"], int(r["labels_per_class"]), int(r["seed"])): r
          for r in rows}
    ref_s, ref_a = cfg["reference"]
    outside = (f" ({n_rows - len(rows)} finished cell(s) outside this grid left out)"
               if n_rows > len(rows) else "")
    lines = [f"# as3l bench `{cfg['name']}` — {cfg['dataset']}, net {cfg['net']}\n",
             f"{len(rows)} of {planned if planned is not None else '?'} cells done{outside}; "
             f"seeds {cfg['seeds']}; mean ± std over the seeds done (`(k/n)`: only k of n "
             "values finite). Accuracies in %.\n"]
    iters = sorted({r["num_train_iter"] for r in rows})
    if iters:
        lines.append(f"Iterations per cell: {', '.join(iters)}.\n")

    def sampler_table(value):
        """Rows sampler, columns algorithm @ budget: mean ± std over seeds of value(row)."""
        header = ["sampler"] + [f"{a} @{l}/cls" for l in lpcs for a in algs]
        trs = []
        for s in samplers:
            tr = [s]
            for l in lpcs:
                for a in algs:
                    vals = [value(by[(s, a, l, sd)]) for sd in cfg["seeds"] if (s, a, l, sd) in by]
                    tr.append(rp.mean_std(vals, scale=100) if vals else "")
            trs.append(tr)
        return rp.markdown_table(header, trs)

    for title, key in (("Table 1a. Final test accuracy (%)", "final_acc"),
                       ("Table 1b. Best test accuracy (%) (the paper reports best)", "best_acc")):
        lines += [f"## {title}\n", sampler_table(lambda r, key=key: _f(r, key))]

    # Table 1c: how fast, where Table 2 saturates at its first evaluation
    curves = _Curves(out) if curves is None else curves
    if out is not None:
        lines += [f"## Table 1c. Test accuracy (%) after {EARLY_FRACTION:.0%} of the iterations "
                  "(the first evaluation at or after it): how fast each cell learns\n",
                  sampler_table(lambda r: _early(r, curves))]

    if out is not None:
        lines += [f"## Table 1e. Mean test accuracy (%) of the evaluations in the last "
                  f"{1 - LATE_FRACTION:.0%} of the iterations (from iteration "
                  f"⌈{LATE_FRACTION:g} × iterations⌉ on): the end of the run, less one "
                  "evaluation's swing\n",
                  sampler_table(lambda r: _late(r, curves))]

    lines += _per_seed_table(cfg, by)

    # Table 2: iterations to reach the reference's final accuracy (same budget and seed)
    header = ["sampler + algorithm"] + [h for l in lpcs for h in
                                        (f"iterations @{l}/cls", f"speed-up @{l}/cls")]
    trs = []
    for s in samplers:
        for a in algs:
            if (s, a) == (ref_s, ref_a):
                continue
            tr = [f"{s} + {a}"]
            any_val = False
            for l in lpcs:
                its, sps = [], []
                for sd in cfg["seeds"]:
                    r, ref = by.get((s, a, l, sd)), by.get((ref_s, ref_a, l, sd))
                    if r is None or ref is None:
                        continue
                    any_val = True
                    reach = _reach(r, _f(ref, "final_acc"), curves)
                    its.append(float("nan") if reach is None else reach)
                    sps.append(rp.speedup(int(ref["num_train_iter"]), reach))
                tr += [rp.mean_std(its, digits=0) if its else "",
                       rp.mean_std(sps, digits=2, suffix="×") if sps else ""]
            if any_val:
                trs.append(tr)
    lines += [f"## Table 2. Iterations to reach {ref_s} + {ref_a}'s final accuracy "
              "(same budget and seed), and speed-up = the reference's iterations / iterations "
              "to reach\n",
              "Resolution: the evaluation interval; a cell that reaches the target at its first "
              "evaluation counts that iteration, so its speed-up is a lower bound. `(k/n)`: "
              "reached in k of n seeds; mean ± std over those.\n\n" + (rp.markdown_table(header, trs) if trs else
                                               "(needs the reference cells)\n")]

    lines += _targets_table(cfg, by, curves)
    lines += _prior_effect_table(cfg, by, curves)

    if out is not None and class_names:
        lines += _per_class_table(cfg, rows, Path(out), list(class_names))

    props = sorted({p["propagator"] for p in priors}, key=lambda p: list(cfg["propagators"]).index(p)
                   if p in cfg["propagators"] else 99)
    pby = {(p["sampler"], p["propagator"], int(p["labels_per_class"]), int(p["seed"])): p
           for p in priors}
    for title, key, scale, digits in (
            ("Table 4/5. Prior accuracy on unlabeled samples (%)", "prior_acc", 100, 1),
            ("Class coverage of the labeled set (classes with ≥ 1 label)", "coverage", 1, 1),
            ("Table 6. Expected calibration error of the prior (15 bins)", "ece", 1, 3)):
        if key == "coverage":
            header = ["sampler"] + [f"@{l}/cls" for l in lpcs]
        else:
            header = ["sampler"] + [f"{p} @{l}/cls" for l in lpcs for p in props]
        trs = []
        for s in samplers:
            tr = [s]
            for l in lpcs:
                for p in (props[:1] if key == "coverage" else props):
                    vals = [_f(pby[(s, p, l, sd)], key) for sd in cfg["seeds"]
                            if (s, p, l, sd) in pby]
                    tr.append(rp.mean_std(vals, scale=scale, digits=digits) if vals else "")
            trs.append(tr)
        lines += [f"## {title}\n", rp.markdown_table(header, trs) if props else "(no priors yet)\n"]
    wall = [_f(r, "wall_s") for r in rows]
    cpu = [_f(r, "cpu_s") for r in rows]
    if wall:
        known = [c for c in cpu if math.isfinite(c)]
        cpu_text = (f"CPU time {rp.format_seconds(float(np.mean(known)))} per cell"
                    + ("" if len(known) == len(cpu) else f" (over the {len(known)} cells where it "
                       "is known)") if known else "CPU time unknown")
        lines.append(f"Compute: {len(wall)} cells, {rp.format_seconds(float(np.nansum(wall)))} "
                     f"of training wall time in total ({rp.format_seconds(float(np.nanmean(wall)))}"
                     f" per cell; {cpu_text}, "
                     "≈ the wall time on an idle machine with one thread).\n")
    return "\n".join(lines)


def _pairs_done(cfg, by) -> List[Tuple[str, str]]:
    """(sampler, algorithm) pairs with at least one finished cell, in grid order."""
    have = {(s, a) for s, a, _, _ in by}
    return [(s, a) for s in cfg["samplers"] for a in cfg["algorithms"] if (s, a) in have]


def _per_seed_table(cfg, by) -> List[str]:
    """Table 1d: final (best) test accuracy of every finished cell, one row per budget and
    seed, one column per sampler + algorithm: the paired view the means hide."""
    from . import report as rp
    pairs = _pairs_done(cfg, by)
    if not pairs:
        return []
    trs = []
    for l in cfg["labels_per_class"]:
        for sd in cfg["seeds"]:
            got = [by.get((s, a, l, sd)) for s, a in pairs]
            if any(r is not None for r in got):
                trs.append([f"{l}", f"{sd}"] + [
                    "" if r is None else f"{rp.pct(_f(r, 'final_acc'))} "
                                         f"({rp.pct(_f(r, 'best_acc'))})" for r in got])
    return ["## Table 1d. Final (best) test accuracy (%) per seed\n",
            rp.markdown_table(["labels/cls", "seed"] + [f"{s} + {a}" for s, a in pairs], trs)]


def _best_peer(cfg, by, l: int, seeds: Sequence[int]):
    """The peers with a finite final accuracy on one of ``seeds`` at ``l`` labels/class, best
    first, and the seeds they all share.

    Returns ``(scored, common)``: ``scored`` is a list of ``(n paired seeds, mean final accuracy
    over them, (sampler, algorithm), mean over common)`` (the last None where ``common`` is
    empty); ``common`` the sorted seeds on which every listed peer has a finite value. The
    ranking is like-for-like: by the mean over ``common`` (highest first); only where the peers
    share no seed, by the number of paired seeds, then their mean. Once every peer has every
    seed, both means are the mean over all the seeds."""
    per = {}
    for s, a in cfg["peers"]:
        vals = {sd: _f(by[(s, a, l, sd)], "final_acc") for sd in seeds if (s, a, l, sd) in by}
        vals = {sd: v for sd, v in vals.items() if math.isfinite(v)}
        if vals:
            per[(s, a)] = vals
    common = sorted(set.intersection(*(set(v) for v in per.values()))) if per else []
    scored = [(len(v), float(np.mean(list(v.values()))), pair,
               float(np.mean([v[sd] for sd in common])) if common else None)
              for pair, v in per.items()]
    if common:
        return sorted(scored, key=lambda t: -t[3]), common
    return sorted(scored, key=lambda t: (-t[0], -t[1])), common


def _reach_cell(row, ref, curves: _Curves) -> Tuple[str, Optional[float]]:
    """The first iteration at which ``row``'s curve reaches ``ref``'s final accuracy, as
    text with its fraction of ``ref``'s iterations, and that fraction (``inf``: never
    reached; None: no reference cell, no curve or no finite target)."""
    target = _f(ref, "final_acc") if ref is not None else float("nan")
    curve = curves(row)
    if curve is None or not math.isfinite(target):
        return "–", None
    from . import report as rp
    reach = rp.iterations_to_reach(curve, target)
    if reach is None:
        return "not reached", float("inf")
    frac = reach / int(ref["num_train_iter"])
    return f"{reach} of {ref['num_train_iter']} ({frac:.2f})", frac


def _targets_table(cfg, by, curves: _Curves) -> List[str]:
    """The targets table: ``cfg['method']`` against the best of ``cfg['peers']``
    (:func:`_best_peer`), paired by seed, per budget.

    One row per seed the method has: its final accuracy, the best peer's, the difference in
    points (where both are finite), and the iteration at which the method first reaches the
    reference's final accuracy (:func:`_reach_cell`). Last row: mean ± std of the
    differences, the seeds the method is ahead on, and the largest reach fraction."""
    from . import report as rp
    if cfg.get("method") is None:
        return []
    (ms, ma), peers = cfg["method"], cfg["peers"]
    ref_s, ref_a = cfg["reference"]
    lines = [f"## Targets: {ms} + {ma} against the best peer, paired by seed\n",
             "Peers: " + ", ".join(f"{s} + {a}" for s, a in peers) + ". Best peer per budget: "
             "the highest mean final accuracy on the seeds every peer shares with the method "
             "(where they share none: the peer paired on the most seeds, then its mean). "
             "Difference = method − best peer (points). Reach = "
             f"the first evaluation at which the method reaches {ref_s} + {ref_a}'s final "
             "accuracy (same budget and seed), and its fraction of the reference's "
             "iterations.\n"]
    any_budget = False
    for l in cfg["labels_per_class"]:
        mine = {sd: by[(ms, ma, l, sd)] for sd in cfg["seeds"] if (ms, ma, l, sd) in by}
        scored, common = _best_peer(cfg, by, l, list(mine))
        if not scored:
            continue
        any_budget = True
        bs, ba = scored[0][2]
        trs, diffs, fracs = [], [], []
        for sd, r in mine.items():
            mv = _f(r, "final_acc")
            p = by.get((bs, ba, l, sd))
            pv = _f(p, "final_acc") if p is not None else float("nan")
            d = 100 * (mv - pv)
            if math.isfinite(d):
                diffs.append(d)
            reach, frac = _reach_cell(r, by.get((ref_s, ref_a, l, sd)), curves)
            if frac is not None:
                fracs.append(frac)
            trs.append([f"{sd}", rp.pct(mv), rp.pct(pv),
                        f"{d:+.1f}" if math.isfinite(d) else "–", reach])
        worst = max(fracs) if fracs else None
        trs.append(["all", "", "",
                    (rp.mean_std(diffs, signed=True) + f"; ahead on {sum(d > 0 for d in diffs)} "
                     f"of {len(diffs)}") if diffs else "–",
                    "–" if worst is None else "not reached on some seed" if math.isinf(worst)
                    else f"largest fraction {worst:.2f} ({len(fracs)} seeds)"])
        late = [100 * (_late(r, curves) - _late(by[(bs, ba, l, sd)], curves))
                for sd, r in mine.items() if (bs, ba, l, sd) in by]
        late = [d for d in late if math.isfinite(d)]   # NaN: a curve missing
        late_line = ([f"End of the run (Table 1e: mean of the evaluations in the last "
                      f"{1 - LATE_FRACTION:.0%} of the iterations), method − best peer: "
                      f"{rp.mean_std(late, signed=True)} points; ahead on "
                      f"{sum(d > 0 for d in late)} of {len(late)} seeds.\n"] if late else [])
        own = ", ".join(f"{s} + {a} {100 * m:.1f} ({n})" for n, m, (s, a), _ in scored)
        if common:
            ranked = ", ".join(f"{s} + {a} {100 * c:.1f}" for _, _, (s, a), c in scored)
            peers_line = ("peers' mean final accuracy on the seeds every peer shares with the "
                          f"method ({', '.join(map(str, common))}), which ranks them: {ranked}"
                          "; on all the seeds each has paired with the method (their number): "
                          f"{own}")
        else:
            peers_line = ("the peers share no seed with each other and the method; mean final "
                          f"accuracy on the seeds each has paired with it (their number): {own}")
        lines += [f"{l} label(s)/class; {peers_line}; best: **{bs} + {ba}**.\n",
                  rp.markdown_table(["seed", f"{ms} + {ma}", f"{bs} + {ba}", "difference",
                                     f"reach {ref_s} + {ref_a}"], trs)] + late_line
    if not any_budget:
        lines.append("(needs a peer cell on a seed the method has)\n")
    return lines


def _prior_effect_table(cfg, by, curves: _Curves) -> List[str]:
    """Table 1f: ``cfg['prior_effect'] = (without, with)``, the algorithm with the prior minus
    the one without it on the same labeled set (sampler, budget and seed), in points. ``by``
    maps ``(sampler, algorithm, labels per class: int, seed: int)`` to a ``cells.csv`` row.

    One row per sampler and budget with at least one seed that has both cells: the final
    accuracy's difference per seed (blank where a cell is missing, "–" where a value is not a
    number), its mean ± std and the seeds the prior is ahead on, and the mean differences of
    Table 1e's end-of-run mean and of Table 1c's early accuracy (over the seeds with curves)."""
    from . import report as rp
    if cfg.get("prior_effect") is None:
        return []
    a0, a1 = cfg["prior_effect"]
    seeds = list(cfg["seeds"])

    def cell(v: Optional[float]) -> str:
        return "" if v is None else f"{v:+.1f}" if math.isfinite(v) else "–"

    trs = []
    for l in cfg["labels_per_class"]:
        for s in cfg["samplers"]:
            pairs = {sd: (by[(s, a0, l, sd)], by[(s, a1, l, sd)]) for sd in seeds
                     if (s, a0, l, sd) in by and (s, a1, l, sd) in by}
            if not pairs:
                continue
            final = {sd: 100 * (_f(w, "final_acc") - _f(wo, "final_acc"))
                     for sd, (wo, w) in pairs.items()}
            ok = [d for d in final.values() if math.isfinite(d)]
            late = [100 * (_late(w, curves) - _late(wo, curves)) for wo, w in pairs.values()]
            early = [100 * (_early(w, curves) - _early(wo, curves)) for wo, w in pairs.values()]
            # mean_std marks "(k/n)" where only k of the n paired seeds have a finite value
            trs.append([s, f"{l}"] + [cell(final.get(sd)) for sd in seeds] + [
                rp.mean_std(list(final.values()), signed=True),
                f"{sum(d > 0 for d in ok)} of {len(ok)}",
                rp.mean_std(late, signed=True), rp.mean_std(early, signed=True)])
    head = [f"## Table 1f. The prior on the same labels: {a1} − {a0} (points), paired by "
            "sampler, budget and seed\n"]
    if not trs:
        return head + [f"(needs a {a0} and a {a1} cell on the same labeled set)\n"]
    return head + [rp.markdown_table(
        ["sampler", "labels/cls"] + [f"seed {sd}" for sd in seeds]
        + ["final: mean", "prior ahead", "end of run (1e): mean",
           f"after {EARLY_FRACTION:.0%} (1c): mean"], trs)]


def cell_per_class(out: Path, row: Mapping[str, str], num_classes: int) -> Optional[np.ndarray]:
    """Per-class test accuracy of a finished cell (a ``cells.csv`` row of the bench directory
    ``out``) at its last evaluation: the diagonal of the last confusion matrix USB logged next
    to its ``metrics.csv`` (:func:`as3l_plugin.report.final_confusion`), float64
    ``(num_classes,)``; None when the row has no metrics path or the log no parsable matrix."""
    from . import report as rp
    if not row.get("metrics"):
        return None
    cm = rp.final_confusion((Path(out) / row["metrics"]).parent / "log.txt", num_classes)
    return None if cm is None else np.diag(cm)


def _per_class_table(cfg, rows, out: Path, names: List[str]) -> List[str]:
    """Table 3: per-class test accuracy at each cell's last evaluation (the diagonal of the
    confusion matrix USB logged there), mean over the seeds done, per sampler + algorithm and
    budget; cells without a parsable matrix are left out (``n`` counts the seeds used)."""
    from . import report as rp
    groups: Dict[Tuple[str, str, int], List[np.ndarray]] = {}
    for r in rows:
        d = cell_per_class(out, r, len(names))
        if d is not None:
            groups.setdefault((r["sampler"], r["algorithm"], int(r["labels_per_class"])),
                              []).append(d)
    if not groups:
        return []
    order = {s: i for i, s in enumerate(cfg["samplers"])}
    aorder = {a: i for i, a in enumerate(cfg["algorithms"])}
    trs = []
    for (s, a, l), diags in sorted(groups.items(), key=lambda kv: (
            kv[0][2], order.get(kv[0][0], 99), aorder.get(kv[0][1], 99))):
        m = np.mean(diags, axis=0) * 100
        trs.append([f"{s} + {a}", f"{l}", str(len(diags))] + [f"{v:.1f}" for v in m])
    return ["## Table 3. Per-class test accuracy (%) at the last evaluation (the diagonal of "
            "USB's logged confusion matrix), mean over seeds\n",
            rp.markdown_table(["sampler + algorithm", "labels/cls", "n"] + names, trs)]


def _early(row, curves: _Curves) -> float:
    """Accuracy of a cell after EARLY_FRACTION of its iterations (NaN without its curve)."""
    from . import report as rp
    c = curves(row)
    at = math.ceil(EARLY_FRACTION * int(row["num_train_iter"]))
    return float("nan") if c is None else rp.accuracy_at(c, at)


def _late(row, curves: _Curves) -> float:
    """Mean accuracy of a cell's evaluations from LATE_FRACTION of its iterations on (NaN
    without its curve)."""
    from . import report as rp
    c = curves(row)
    at = math.ceil(LATE_FRACTION * int(row["num_train_iter"]))
    return float("nan") if c is None else rp.mean_accuracy_from(c, at)


def _reach(row, target: float, curves: _Curves) -> Optional[int]:
    """First iteration at which a cell's curve reaches ``target`` (None: never, or no curve)."""
    from . import report as rp
    c = curves(row)
    return None if c is None else rp.iterations_to_reach(c, target)


def bench_plots(cfg: Mapping[str, Any], rows: Sequence[Mapping[str, str]], out: Path, *,
                curves: Optional[_Curves] = None) -> List[Path]:
    """Accuracy-vs-iteration plots: per budget × algorithm (samplers as lines) and the
    priority pairs per budget; mean ± std band over seeds."""
    from . import report as rp
    out = Path(out)
    curve_of = _Curves(out) if curves is None else curves
    paths = []
    groups: Dict[Tuple[int, str], Dict[str, list]] = {}
    key_pairs = set(map(tuple, cfg["priority"])) | {tuple(cfg["reference"])}
    keyplots: Dict[int, Dict[str, list]] = {}
    for r in rows:
        if not _in_grid(cfg, r):
            continue
        c = curve_of(r)
        if c is None:
            continue
        l = int(r["labels_per_class"])
        groups.setdefault((l, r["algorithm"]), {}).setdefault(r["sampler"], []).append(c)
        if (r["sampler"], r["algorithm"]) in key_pairs:
            keyplots.setdefault(l, {}).setdefault(f"{r['sampler']} + {r['algorithm']}", []).append(c)
    if not groups:
        return paths
    (out / "plots").mkdir(exist_ok=True)
    for (l, alg), curves in sorted(groups.items()):
        p = out / "plots" / f"acc_{l}perclass_{alg}.png"
        rp.plot_accuracy_curves(curves, p, title=f"{cfg['dataset']}, {l} label(s)/class, {alg}: "
                                "test accuracy (mean ± std over seeds)")
        paths.append(p)
    for l, curves in sorted(keyplots.items()):
        p = out / "plots" / f"acc_{l}perclass_key.png"
        rp.plot_accuracy_curves(curves, p, title=f"{cfg['dataset']}, {l} label(s)/class: "
                                "key comparisons (mean ± std over seeds)")
        paths.append(p)
    return paths


def run_bench(config, *, quick: bool = False, out=None, max_cells: Optional[int] = None,
              report_only: bool = False, merge: Sequence[Any] = (),
              seeds: Optional[Sequence[int]] = None, log: Callable[[str], None] = print,
              overrides: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Load the config and run the bench (or only merge other bench directories into it and
    report: see :meth:`Bench.merge`); returns paths and the tables' text.

    ``seeds`` replaces the config's (``--quick`` included): one process per seed subset, each
    with its own ``out``, splits a grid over cores; ``merge`` joins them afterwards.
    """
    bench = open_bench(config, quick=quick, out=out, seeds=seeds, log=log, overrides=overrides)
    if merge:
        return bench.merge(merge)
    return bench.run(max_cells=max_cells, report_only=report_only)


def open_bench(config, *, quick: bool = False, out=None, seeds: Optional[Sequence[int]] = None,
               log: Callable[[str], None] = print,
               overrides: Optional[Mapping[str, Any]] = None) -> Bench:
    """The :class:`Bench` of a config and ``out`` (default ``results/bench_<name>``), with
    ``seeds`` (distinct non-negative ints) replacing the config's; runs nothing."""
    cfg = load_bench_config(config, quick=quick, overrides=overrides)
    if seeds is not None:
        seeds = list(seeds)
        if not seeds or len(set(seeds)) != len(seeds) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds):
            raise ConfigError(f"={seeds!r} must be distinct non-negative integers",
                              field="--seeds")
        cfg["seeds"] = seeds
    out = Path(out) if out is not None else Path("results") / f"bench_{cfg['name']}"
    return Bench(cfg, out, log=log)
