"""Config files: the one YAML reader, the three kinds of config, and the keys each declares.

Three commands read a YAML file, each its own kind:

=========  ==============================  =================================================
kind       command                         keys
=========  ==============================  =================================================
``train``  ``as3l train --c FILE``         USB's ``train.py`` flags (:data:`USB_ARGS`), the
                                           plugin's (:data:`PLUGIN_ARGS`, ``as3l_flexmatch``'s
                                           ``prior_*``) and the chosen algorithm's
                                           ``get_argument()``
``run``    ``as3l run --config FILE``      :data:`RUN_SCHEMA`
``bench``  ``as3l bench --config FILE``    :data:`BENCH_SCHEMA`
=========  ==============================  =================================================

:func:`check_kind` recognises a file of another kind by its top-level keys (the keys only
that kind declares) and refuses it with the command to use. :func:`check_schema` checks a
``run`` / ``bench`` config against its schema: an unknown key at any level is an error naming
its dotted path (``finetune.kk``). :func:`check_train_keys` checks a USB training config:
USB stores any YAML key as an attribute, so a misspelt key would silently train with the
default; see its docstring for which unknown keys are errors and which are warnings.

This module imports only the standard library at import time (``as3l train --help`` stays
fast); :func:`read_yaml` imports PyYAML when called. The USB flag table lives here, not in
the CLI, so that :mod:`as3l_plugin.usb.train` (the library) and
:mod:`as3l_plugin.commands.train` (the CLI) both read it from below.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterable, List, Optional

from .errors import ConfigError


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Dict[str, Any]:
    """``base`` updated by ``over``, recursively where both hold a dict (a new dict; the inputs
    are left as they are, values that are not merged are shared)."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) \
            else v
    return out


# =========================================================================== the USB flag table
# (option strings, dest, kind, default, help) — USB 0.3.2 train.py's get_config, in order.
# kind: "str" | "int" | "float" | "bool" (USB's str2bool) | "flag" (store_true) | "gpu".
USB_ARGS = (
    (("--save_dir",), "save_dir", "str", "./saved_models", "root folder of runs"),
    (("-sn", "--save_name"), "save_name", "str", "fixmatch", "run folder name under save_dir"),
    (("--resume",), "resume", "flag", False, "resume from load_path"),
    (("--load_path",), "load_path", "str", None, "checkpoint to resume from"),
    (("-o", "--overwrite"), "overwrite", "flag", True, "replace an existing run folder"),
    (("--use_tensorboard",), "use_tensorboard", "flag", False, "write tensorboard curves"),
    (("--use_wandb",), "use_wandb", "flag", False, "log to wandb"),
    (("--use_aim",), "use_aim", "flag", False, "log to aim"),
    (("--epoch",), "epoch", "int", 1, "epochs (num_train_iter must divide evenly)"),
    (("--num_train_iter",), "num_train_iter", "int", 20, "total training iterations"),
    (("--num_warmup_iter",), "num_warmup_iter", "int", 0, "cosine linear warm-up iterations"),
    (("--num_eval_iter",), "num_eval_iter", "int", 10, "evaluation (and checkpoint) period"),
    (("--num_log_iter",), "num_log_iter", "int", 5, "logging period"),
    (("-nl", "--num_labels"), "num_labels", "int", 400, "number of labeled samples"),
    (("-bsz", "--batch_size"), "batch_size", "int", 8, "labeled batch size"),
    (("--uratio",), "uratio", "int", 1, "unlabeled / labeled batch ratio (mu)"),
    (("--eval_batch_size",), "eval_batch_size", "int", 16, "evaluation batch size"),
    (("--ema_m",), "ema_m", "float", 0.999, "EMA momentum of the evaluation model"),
    (("--ulb_loss_ratio",), "ulb_loss_ratio", "float", 1.0, "unlabeled loss weight (lambda)"),
    (("--optim",), "optim", "str", "SGD", "SGD | AdamW"),
    (("--lr",), "lr", "float", 3e-2, "learning rate"),
    (("--momentum",), "momentum", "float", 0.9, "SGD momentum"),
    (("--weight_decay",), "weight_decay", "float", 5e-4, "weight decay"),
    (("--layer_decay",), "layer_decay", "float", 1.0, "layer-wise lr decay (1 = none)"),
    (("--net",), "net", "str", "wrn_28_2", "backbone (semilearn.nets name, or cnn4 / cnn4_rgb)"),
    (("--net_from_name",), "net_from_name", "bool", False, "take the net from torchvision"),
    (("--use_pretrain",), "use_pretrain", "bool", False, "initialise the encoder from pretrain_path"),
    (("--pretrain_path",), "pretrain_path", "str", "", "checkpoint {'model': state_dict}"),
    (("-alg", "--algorithm"), "algorithm", "str", "fixmatch", "SSL algorithm (e.g. as3l_flexmatch)"),
    (("--use_cat",), "use_cat", "bool", True, "one forward pass over concatenated inputs"),
    (("--amp",), "amp", "bool", False, "mixed precision (CUDA only)"),
    (("--clip_grad",), "clip_grad", "float", 0.0, "gradient clipping norm (0 = off)"),
    (("-imb_alg", "--imb_algorithm"), "imb_algorithm", "str", None, "imbalanced SSL algorithm"),
    (("--data_dir",), "data_dir", "str", "./data", "dataset root"),
    (("-ds", "--dataset"), "dataset", "str", "cifar10", "USB dataset, or digits / fashion_mnist / folder (data_dir = the image folder) / arrays (data_dir = the .npz)"),
    (("-nc", "--num_classes"), "num_classes", "int", 10, "number of classes"),
    (("--train_sampler",), "train_sampler", "str", "RandomSampler", "training sampler"),
    (("--num_workers",), "num_workers", "int", 1, "data-loader workers"),
    (("--include_lb_to_ulb",), "include_lb_to_ulb", "bool", True, "labeled data also in the unlabeled set"),
    (("--lb_imb_ratio",), "lb_imb_ratio", "int", 1, "labeled imbalance ratio"),
    (("--ulb_imb_ratio",), "ulb_imb_ratio", "int", 1, "unlabeled imbalance ratio"),
    (("--ulb_num_labels",), "ulb_num_labels", "int", None, "unlabeled samples (imbalanced setting)"),
    (("--img_size",), "img_size", "int", 32, "image size (USB datasets; dataset folder: the size images are resized to)"),
    (("--crop_ratio",), "crop_ratio", "float", 0.875, "crop ratio of the weak augmentation"),
    (("--max_length",), "max_length", "int", 512, "NLP max length"),
    (("--max_length_seconds",), "max_length_seconds", "float", 4.0, "audio max length"),
    (("--sample_rate",), "sample_rate", "int", 16000, "audio sample rate"),
    (("--world-size",), "world_size", "int", 1, "number of nodes"),
    (("--rank",), "rank", "int", 0, "node rank"),
    (("-du", "--dist-url"), "dist_url", "str", "tcp://127.0.0.1:11111", "rendezvous URL"),
    (("--dist-backend",), "dist_backend", "str", "nccl", "nccl (CUDA) | gloo (CPU: forced)"),
    (("--seed",), "seed", "int", 1, "random seed"),
    (("--gpu",), "gpu", "gpu", None, "GPU id; None = all GPUs (CPU when no CUDA); 'cpu' forces CPU"),
    (("--multiprocessing-distributed",), "multiprocessing_distributed", "bool", False,
     "one process per GPU (per cpu_procs_per_node on CPU) with DDP"),
    (("--c",), "c", "str", "", "YAML config file"),
)

#: keys the plugin adds for every algorithm
PLUGIN_ARGS = (
    (("--lb_index_file",), "lb_index_file", "str", None,
     "labeled indices (.npy int, len num_labels) replacing USB's random split"),
    (("--lb_labels_file",), "lb_labels_file", "str", None,
     "labels of the lb_index_file samples: the annotated to_annotate.csv (index,label); "
     "needed for a dataset whose pool is unlabeled"),
    (("--channels",), "channels", "int", None,
     "dataset folder: 1 or 3 to convert every image (default: detected)"),
    (("--skip_bad_images",), "skip_bad_images", "bool", False,
     "dataset folder: skip unreadable images (listed) instead of stopping"),
    (("--flip",), "flip", "bool", None,
     "dataset folder / arrays: horizontal flip in the weak augmentation (default true)"),
    (("--cpu_procs_per_node",), "cpu_procs_per_node", "int", 1,
     "processes per node for multiprocessing_distributed on CPU (gloo)"),
    (("--cpu_bf16",), "cpu_bf16", "str", "auto",
     "CPU only: bfloat16 autocast of the training step: true | false | auto (on where the "
     "CPU has native bf16); USB's --amp keeps its CUDA meaning"),
)

#: ``as3l_flexmatch``'s own keys (its ``get_argument()``); known in every training config,
#: because one ``usb:`` block of ``as3l run`` / ``as3l bench`` feeds every algorithm
AS3L_ARGS = ("prior_file", "prior_T", "prior_mode", "prior_update_interval", "prior_update_ks",
             "prior_update_features")

#: every algorithm-specific flag of semilearn 0.3.2 (name2alg, name2imbalg) and the plugin's
#: as3l_flexmatch; a test checks this list against the installed registries.
ALGORITHM_FLAGS = (
    "C", "K", "T", "abc_loss_ratio", "abc_p_cutoff", "adsh_tau_1", "clip_thresh",
    "contrast_loss_ratio", "contrast_p_cutoff", "cossl_max_lam", "cossl_tfe_augment",
    "cossl_tfe_u_ratio", "cossl_tfe_warm_bs", "cossl_tfe_warm_ema_decay", "cossl_tfe_warm_epoch",
    "cossl_tfe_warm_lr", "cossl_tfe_warm_wd", "cossl_warm_epoch", "crest_alpha",
    "crest_dist_align_t", "crest_num_gens", "crest_pro_dist_align", "da_len", "darp_alpha",
    "darp_iter_T", "darp_num_refine_iter", "darp_warmup_epochs", "daso_T_dist", "daso_T_proto",
    "daso_assign_loss_ratio", "daso_interp_alpha", "daso_num_pl_dist_iter",
    "daso_num_pretrain_iter", "daso_queue_len", "daso_with_dist_aware", "debiaspl_ema_p",
    "debiaspl_tau", "dist_align", "dist_uniform", "ema_p", "ent_loss_ratio", "gamma",
    "hard_label", "in_loss_ratio", "kl_loss_ratio", "mixup_alpha", "mixup_manifold", "n_sigma",
    "num_wu_eval_iter", "num_wu_iter", "p_cutoff", "per_class", "proj_size", "queue_batch",
    "rho_min", "rot_loss_ratio", "smoothing_alpha", "thresh_warmup", "tras_A", "tras_B",
    "tras_tro", "tras_warmup_epochs", "tsa_schedule", "unsup_warm_up", "use_quantile",
    "vat_embed", "vat_eps",
) + AS3L_ARGS

#: algorithms whose labeled set follows ``lb_index_file`` (:mod:`as3l_plugin.usb.compat`,
#: tested in ``tests/test_usb_train.py``); any other algorithm would ignore the file
LB_INDEX_ALGORITHMS = ("fixmatch", "flexmatch", "freematch", "softmatch", "fullysupervised",
                       "supervised", "as3l_flexmatch")

#: keys a training config must set: without them USB trains its defaults (:data:`USB_ARGS`)
TRAIN_REQUIRED = ("algorithm", "dataset", "num_labels", "num_classes")

#: class count of USB's image datasets (``semilearn.datasets.cv_datasets``); the plugin's
#: datasets report theirs (:func:`as3l_plugin.usb.checks.pool_info`)
USB_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10, "stl10": 10}


def str2bool(v) -> bool:
    """USB's str2bool: yes/true/t/y/1 and no/false/f/n/0 (any case); bools pass through."""
    if isinstance(v, bool):
        return v
    s = str(v).lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def parse_gpu(v):
    """``--gpu``: an int id, ``None`` (USB's YAML writes the string 'None') or ``'cpu'``."""
    if v is None or isinstance(v, int) and not isinstance(v, bool):
        return v
    s = str(v).strip()
    if s.lower() in ("none", "null", ""):
        return None
    if s.lower() == "cpu":
        return "cpu"
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"GPU id, None or cpu expected, got {v!r}") from None


_TYPES = {"str": str, "int": int, "float": float, "bool": str2bool, "gpu": parse_gpu}


def add_usb_arguments(parser: argparse.ArgumentParser, *, explicit_only: bool = False,
                      typed: bool = True) -> argparse.ArgumentParser:
    """Add USB's and the plugin's flags to ``parser``.

    ``explicit_only``: defaults are ``argparse.SUPPRESS`` so the namespace holds only the
    flags given. ``typed=False`` keeps values as strings (re-parsed later, typed).
    """
    for opts, dest, kind, default, help_ in USB_ARGS + PLUGIN_ARGS:
        dflt = argparse.SUPPRESS if explicit_only else default
        if kind == "flag":
            parser.add_argument(*opts, dest=dest, action="store_true", default=dflt, help=help_)
        else:
            parser.add_argument(*opts, dest=dest, type=_TYPES[kind] if typed else str,
                                default=dflt, help=help_)
    return parser


#: every key a USB training config may hold for some algorithm (USB's, the plugin's, every
#: algorithm's); the ``usb:`` blocks of ``as3l run`` / ``as3l bench`` are checked against it
TRAIN_KEYS = frozenset(d for _, d, *_ in USB_ARGS + PLUGIN_ARGS) | frozenset(ALGORITHM_FLAGS)


# =========================================================================== reading
class _DuplicateKey(Exception):
    pass


def _loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, with YAML 1.2 floats (``5e-4`` is a float, as USB's ruamel
        reads it; YAML 1.1 would make it a string) and duplicate keys refused."""

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(f"{key}: appears twice (lines {seen[key]} and {line}); "
                                        "keep one")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return Loader


def read_yaml(path, *, field: Optional[str] = None) -> Dict[str, Any]:
    """Read one config file: a YAML mapping (an empty file is ``{}``).

    Parameters
    ----------
    path : str or PathLike
    field : str, optional
        The option that named the file (``c`` for ``as3l train --c``), for error messages.

    Returns
    -------
    dict of the file's top-level keys, in file order. ``None`` written as ``None`` stays the
    string ``'None'`` (as USB's loader reads it); ``null`` / ``~`` are None.

    Raises
    ------
    ConfigError
        Missing file, invalid YAML, a key repeated in one mapping, or not a mapping.
    """
    import yaml
    if not os.path.isfile(str(path)):
        raise ConfigError("config file not found", path=path, field=field)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(str(exc), path=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({' '.join(str(exc).split())})", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of config keys, got {type(data).__name__}",
                          path=path)
    return dict(data)


# =========================================================================== schemas
FREE = "free"  #: a mapping whose keys the component it configures checks (sampler params...)
USB = "usb"    #: a mapping of USB training keys (:data:`TRAIN_KEYS`)


class Section:
    """A mapping with declared keys: ``{key: sub-schema}`` (None: any value), plus
    :data:`TRAIN_KEYS` when ``usb`` (a block of USB overrides with a few keys of its own)."""

    def __init__(self, keys: Mapping[str, Any], *, usb: bool = False):
        self.keys, self.usb = dict(keys), usb

    def known(self) -> List[str]:
        return list(self.keys) + (sorted(TRAIN_KEYS - set(self.keys)) if self.usb else [])


class Named:
    """A mapping of user-chosen names (a sampler, an algorithm...), each value ``schema``."""

    def __init__(self, schema):
        self.schema = schema


#: keyword arguments of :func:`~as3l_plugin.features.pretrain_simsiam` (and the
#: ``SimSiamPretrainer`` options it passes on) that a config may set; the stage sets dataset,
#: net, out, seed, device, data_dir
PRETRAIN_KEYS = ("epochs", "batch_size", "lr", "image_size", "num_threads", "progress",
                 "momentum", "weight_decay", "fix_pred_lr", "augment", "channels_last", "compile",
                 "objective", "temperature", "cpu_bf16", "snapshot_epochs", "amp")
#: keyword arguments of :func:`~as3l_plugin.features.extract_features` a config may set
FEATURES_KEYS = ("split", "batch_size", "net", "progress")
#: keyword arguments of :func:`~as3l_plugin.features.finetune_features` (and the
#: ``FeatureFinetuner`` options it passes on) a config may set; the stage sets seed, device
FINETUNE_KEYS = ("k", "budget", "num_classes", "runs", "epochs", "progress", "batch_size",
                 "lr", "normalize", "kmeans_iter")

_FEATURE_SECTIONS = {"pretrain": Section(dict.fromkeys(PRETRAIN_KEYS)),
                     "features": Section(dict.fromkeys(FEATURES_KEYS)),
                     "finetune": Section(dict.fromkeys(FINETUNE_KEYS))}

#: ``as3l run`` (:func:`as3l_plugin.pipeline.load_config`)
#: image-folder / array dataset options (top level of run and bench configs)
_DATA_KEYS = {"img_size": None, "channels": None, "skip_bad_images": None}

RUN_SCHEMA = Section({
    "name": None, "dataset": None, "data_dir": None, "net": None, "num_labels": None,
    "seed": None, "device": None, **_DATA_KEYS, **_FEATURE_SECTIONS,
    "select": Section({"sampler": None, "params": FREE, "features": None}),
    "labels": Section({"source": None, "path": None}),
    "prior": Section({"propagator": None, "params": FREE, "features": None}),
    "usb": USB,
    "as3l_flexmatch": Section({"config": None}, usb=True),
    "baseline": Section({"enabled": None, "config": None, "sampler": None, "params": FREE},
                        usb=True),
})

_BENCH_KEYS = {
    "name": None, "dataset": None, "data_dir": None, "net": None, "device": None,
    **_DATA_KEYS, "seeds": None, "labels_per_class": None, "pretrain_seed": None,
    "samplers": Named(FREE),          # name: {sampler: registered name, its params}
    "select_features": None,
    "propagators": Named(FREE),
    "prior_features": None,
    # name: {config: USB base YAML, prior: a propagators name (as3l_* only), USB overrides}
    "algorithms": Named(Section({"config": None, "prior": None}, usb=True)),
    "reference": None, "priority": None, **_FEATURE_SECTIONS,
    "usb": USB,
}
#: ``as3l bench`` (:func:`as3l_plugin.bench.load_bench_config`); ``quick`` takes the same keys
#: but the report-only keys of the targets table and Table 1f (a quick grid keeps what of
#: the full one's pairs it still has)
BENCH_SCHEMA = Section({**_BENCH_KEYS,
                        "method": None, "peers": None,  # targets table: [s, a] vs [[s, a], ...]
                        "prior_effect": None,           # Table 1f: [algorithm, with the prior]
                        "quick": Section(_BENCH_KEYS)})

SCHEMAS = {"run": RUN_SCHEMA, "bench": BENCH_SCHEMA}


def _suggest(key: str, known: Iterable[str]) -> Optional[str]:
    known = list(known)
    near = [k for k in known if len(k) >= 4 and _one_edit(key, k)]
    if near:
        return near[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _one_edit(a: str, b: str) -> bool:
    """True when ``a`` becomes ``b`` by one insertion, deletion, substitution or swap of
    two neighbours (case counts)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((i for i in range(len(short)) if short[i] != long_[i]), len(short))
    return short[i:] == long_[i + 1:]


def _unknown(key: str, known: Iterable[str]) -> str:
    hint = _suggest(key, known)
    return f"unknown key; did you mean {hint}?" if hint else "unknown key"


def check_schema(data: Mapping[str, Any], schema, *, path=None, prefix: str = "") -> None:
    """Check every key of ``data`` at every level against ``schema``.

    Parameters
    ----------
    data : mapping
        A parsed ``as3l run`` / ``as3l bench`` config.
    schema : Section
        :data:`RUN_SCHEMA` or :data:`BENCH_SCHEMA`.
    path : str or PathLike, optional
        The file, for the message.

    Raises
    ------
    ConfigError
        At the first unknown key, naming its dotted path (``finetune.kk: unknown key; did you
        mean k?``). Values that are not mappings where a mapping is declared are left to the
        loader's own checks.
    """
    if schema is None or schema == FREE or not isinstance(data, Mapping):
        return
    if schema == USB:
        schema = Section({}, usb=True)
    if isinstance(schema, Named):
        for name, value in data.items():
            check_schema(value, schema.schema, path=path, prefix=f"{prefix}{name}.")
        return
    known = schema.known()
    for key, value in data.items():
        if key in schema.keys:
            check_schema(value, schema.keys[key], path=path, prefix=f"{prefix}{key}.")
        elif not (schema.usb and key in TRAIN_KEYS):
            raise ConfigError(_unknown(str(key), known), path=path, field=f"{prefix}{key}")


# =========================================================================== kinds
KIND_NAMES = {"train": "a USB training config", "run": "an as3l run config",
              "bench": "an as3l bench config"}
KIND_COMMANDS = {"train": "as3l train --c", "run": "as3l run --config",
                 "bench": "as3l bench --config"}


def _kind_keys() -> Dict[str, frozenset]:
    return {"train": TRAIN_KEYS, "run": frozenset(RUN_SCHEMA.keys),
            "bench": frozenset(BENCH_SCHEMA.keys)}


def kind_markers(kind: str) -> frozenset:
    """The top-level keys only ``kind`` declares (``samplers`` for bench, ``select`` for run,
    ``algorithm`` for train...): what :func:`detect_kind` recognises a file by."""
    keys = _kind_keys()
    others = frozenset().union(*(v for k, v in keys.items() if k != kind))
    return keys[kind] - others


def detect_kind(data: Mapping[str, Any]) -> Optional[str]:
    """``'train'``, ``'run'`` or ``'bench'``: the kind with the most of its markers among the
    top-level keys of ``data``; None when no kind or several tie."""
    counts = {k: len(set(data) & kind_markers(k)) for k in KIND_NAMES}
    best = max(counts.values())
    winners = [k for k, c in counts.items() if c == best]
    return winners[0] if best and len(winners) == 1 else None


def check_kind(data: Mapping[str, Any], expected: str, *, path=None) -> None:
    """Refuse a config of another kind than ``expected`` (one that holds none of the keys
    only ``expected`` declares, and keys of another kind).

    Raises
    ------
    ConfigError
        ``bench.yaml: this is an as3l bench config, not a USB training config; run
        `as3l bench --config bench.yaml```.
    """
    kind = detect_kind(data)
    if kind is None or kind == expected or set(data) & kind_markers(expected):
        return
    where = path if path is not None else "<file>"
    raise ConfigError(f"this is {KIND_NAMES[kind]}, not {KIND_NAMES[expected]}; run "
                      f"`{KIND_COMMANDS[kind]} {where}`", path=path)


def check_config(data: Mapping[str, Any], kind: str, *, path=None) -> None:
    """:func:`check_kind`, then :func:`check_schema` against the kind's schema (``run`` or
    ``bench``). Raises :class:`~as3l_plugin.errors.ConfigError`."""
    check_kind(data, kind, path=path)
    check_schema(data, SCHEMAS[kind], path=path)


def read_job_config(source, kind: str, *, overrides: Optional[Mapping[str, Any]] = None):
    """Read an ``as3l run`` / ``as3l bench`` config (``kind`` ``'run'`` or ``'bench'``): a YAML
    file or a mapping, with ``overrides`` merged on top (nested dicts merge), checked by
    :func:`check_config`.

    Returns
    -------
    (data, path, base_dir) : (dict, Path or None, Path)
        The checked mapping (defaults not filled in), the file (None for a mapping) and the
        folder that relative paths inside it are resolved against (the file's, else the
        current directory).
    """
    from pathlib import Path
    if isinstance(source, Mapping):
        raw, where, base_dir = dict(source), None, Path.cwd()
    else:
        where = Path(source)
        raw, base_dir = read_yaml(where), where.resolve().parent
    raw = deep_merge(raw, overrides or {})
    check_config(raw, kind, path=where)  # the kind of file, and every key at every level
    return raw, where, base_dir


# =========================================================================== training configs
def _is_plugin_key(key: str) -> bool:
    return key.startswith("prior_") or key.startswith("lb_")


def check_train_keys(config: Mapping[str, Any], known: Iterable[str], *, algorithm: str,
                     path=None, strict: bool = False, shared: bool = False) -> List[str]:
    """Check the keys of a USB training config against what the run reads.

    Parameters
    ----------
    config : mapping
        The keys given (the file's and the keyword overrides; command-line flags are checked
        by argparse).
    known : iterable of str
        The keys the run reads: :data:`USB_ARGS`, :data:`PLUGIN_ARGS`, :data:`AS3L_ARGS` and
        the algorithm's (and imbalanced algorithm's) ``get_argument()`` names.
    algorithm : str
        For the messages.
    strict : bool
        Unknown keys that are otherwise warnings are errors.
    shared : bool
        The config is one of several built from shared blocks (the trainings of ``as3l run``
        / ``as3l bench``, whose ``usb:`` block and base YAMLs feed several algorithms): keys
        of another USB algorithm (:data:`ALGORITHM_FLAGS`) are expected, not reported.

    Returns
    -------
    list of str
        One warning line per unknown key that is not an error (``file: key: ...``).

    Raises
    ------
    ConfigError
        At the first unknown key in the plugin's namespace (``prior_*``, ``lb_*``) or one edit
        away from a known key (``prior_TT: unknown key; did you mean prior_T?``), and with
        ``strict`` at the first other unknown key.
    """
    known = list(dict.fromkeys(known))
    plugin = [d for _, d, *_ in PLUGIN_ARGS] + list(AS3L_ARGS)
    warns = []
    for key in map(str, config):
        if key in known:
            continue
        other_alg = key in ALGORITHM_FLAGS and not _is_plugin_key(key)
        if other_alg and shared:
            continue
        hint = (_suggest(key, plugin) if _is_plugin_key(key) else None) or _suggest(key, known)
        near = hint is not None and len(hint) >= 4 and _one_edit(key, hint)
        if other_alg:
            msg = f"is not a key of algorithm {algorithm} (other USB algorithms read it); " \
                  "it is ignored"
        elif _is_plugin_key(key) or near:
            raise ConfigError(f"unknown key; did you mean {hint}?" if hint else
                              f"unknown key; the plugin's keys are {', '.join(plugin)}",
                              path=path, field=key)
        else:
            msg = "unknown key, ignored by USB and the plugin" + \
                (f"; did you mean {hint}?" if hint else "")
        if strict:
            raise ConfigError(msg + " (--strict)", path=path, field=key)
        warns.append(str(ConfigError(msg + " (--strict: an error)", path=path, field=key)))
    return warns


def check_base_config(path) -> None:
    """A USB base YAML that an ``as3l run`` / ``as3l bench`` config names
    (``as3l_flexmatch.config``, ``algorithms.<name>.config``), checked when that config is
    loaded, before any stage runs: a training config (:func:`check_kind`) whose keys pass
    :func:`check_train_keys` as its training will check them (``shared``: several algorithms
    read these blocks). Raises :class:`~as3l_plugin.errors.ConfigError`; the warnings come
    when the training starts."""
    data = read_yaml(path)
    check_kind(data, "train", path=path)
    check_train_keys(data, TRAIN_KEYS, algorithm=str(data.get("algorithm")), path=path,
                     shared=True)


def check_train_config(given: Mapping[str, Any], *, path=None) -> None:
    """The silent defaults that matter: ``algorithm``, ``dataset``, ``num_labels`` and
    ``num_classes`` must be set (``given``: the keys of every layer but the parser's
    defaults); ``lb_index_file`` only with an algorithm that reads it
    (:data:`LB_INDEX_ALGORITHMS`). Raises :class:`~as3l_plugin.errors.ConfigError`."""
    defaults = {d: v for _, d, _, v, _ in USB_ARGS}
    for key in TRAIN_REQUIRED:
        if given.get(key) in (None, "", "None"):
            raise ConfigError(f"is not set: USB would silently use its default "
                              f"{key}={defaults[key]!r}; set {key}", path=path, field=key)
    lb = given.get("lb_index_file")
    alg = given["algorithm"]
    if lb not in (None, "", "None") and alg not in LB_INDEX_ALGORITHMS:
        raise ConfigError(f"algorithm {alg} ignores it (the plugin applies it to "
                          f"{', '.join(LB_INDEX_ALGORITHMS)}); remove lb_index_file or use "
                          "one of those", path=path, field="lb_index_file")


def emit_warnings(lines: Iterable[str], warn: Optional[Callable[[str], None]] = None) -> None:
    """Send each warning line to ``warn`` (the CLI prints ``warning: <line>``), else
    :func:`warnings.warn` as :class:`~as3l_plugin.errors.ConfigWarning`."""
    import warnings

    from .errors import ConfigWarning
    for line in lines:
        if warn is not None:
            warn(line)
        else:
            warnings.warn(line, ConfigWarning, stacklevel=3)
