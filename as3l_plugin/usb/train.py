"""The plugin's equivalent of USB's ``train.py`` (``as3l train``) and its Python API.

:func:`get_config` builds USB's parser (the same flags, from
:mod:`as3l_plugin.config`), adds the chosen algorithm's own flags
(``get_argument()``), then layers: parser defaults < YAML file < flags given on the command
line < keyword overrides of :func:`train`. (USB's ``train.py`` applies the YAML *after* the
command line, so there a flag repeated in the file is silently ignored.)

:func:`main` / :func:`main_worker` follow USB's ``main`` / ``main_worker`` — run folder
handling, seeding, ``multiprocessing_distributed`` via ``torch.multiprocessing.spawn``,
logger, ``get_net_builder``, algorithm, ``send_model_cuda``, resume, ``train()`` — with
these differences:

- the algorithm class is USB's wrapped by :func:`as3l_plugin.usb.compat.plugin_algorithm`
  (CPU support, ``metrics.csv``, RNG state in checkpoints);
- on CPU (no CUDA, or ``gpu: cpu``) the model stays on CPU; ``multiprocessing_distributed``
  spawns ``cpu_procs_per_node`` processes on the ``gloo`` backend, and runs in-process
  without DDP when that makes a single process;
- a checkpoint that exists but cannot be loaded is an error (USB logs it and silently
  trains from scratch); a ``load_path`` that does not exist still starts from scratch;
- the input files (``lb_index_file``, ``prior_file`` and their sidecars) are checked by
  :func:`as3l_plugin.usb.checks.check_run_inputs` *before* the run folder is touched, so a
  bad input never deletes or half-writes an earlier run;
- rank 0 writes ``<save_dir>/<save_name>/results.json`` (what :func:`train` returns).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import socket
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from .. import config as C
from ..config import add_usb_arguments, parse_gpu
from ..errors import ConfigError
from . import checks, compat

RESULTS_FILE = "results.json"


def _add_algorithm_arguments(parser, cls, *, explicit_only=False):
    for a in cls.get_argument():
        parser.add_argument(a.name, type=a.type, help=a.help,
                            default=argparse.SUPPRESS if explicit_only else a.default)


def get_config(config=None, argv=None, *, strict=False, shared=False, warn=None,
               **overrides) -> argparse.Namespace:
    """USB's ``get_config`` for the plugin.

    Before anything is built, the config is checked (:mod:`as3l_plugin.config`): an
    ``as3l run`` / ``as3l bench`` file is refused with the command to use; the keys of the
    file and of ``overrides`` are checked against USB's, the plugin's and the algorithm's
    (:func:`~as3l_plugin.config.check_train_keys`); ``algorithm``, ``dataset``,
    ``num_labels`` and ``num_classes`` must be set, and ``lb_index_file`` only with an
    algorithm that reads it (:func:`~as3l_plugin.config.check_train_config`).

    Parameters
    ----------
    config : str, PathLike or mapping, optional
        A YAML file (like ``--c``) or a dict of USB config keys.
    argv : list of str, optional
        Command-line flags (USB's ``train.py`` flags, the algorithm's flags, the plugin's).
    strict : bool
        Unknown keys that are otherwise warnings are errors.
    shared : bool
        The config feeds several algorithms (``as3l run`` / ``as3l bench``): keys of another
        USB algorithm are not reported (see :func:`~as3l_plugin.config.check_train_keys`).
    warn : callable(str), optional
        Receives each warning line (default: :func:`warnings.warn`, ``ConfigWarning``).
    **overrides
        Config keys that win over everything else.

    Returns
    -------
    argparse.Namespace with every USB key, the algorithm's keys, ``lb_index_file``,
    ``cpu_procs_per_node``; ``gpu`` normalised to an int, None or ``'cpu'``.
    """
    from semilearn.algorithms import name2alg
    from semilearn.imb_algorithms import name2imbalg
    argv = list(argv or [])
    base = add_usb_arguments(argparse.ArgumentParser(prog="as3l train", allow_abbrev=False))
    explicit = add_usb_arguments(argparse.ArgumentParser(allow_abbrev=False), explicit_only=True)
    pre, _ = explicit.parse_known_args(argv)
    file_cfg = {}
    cfg_path = getattr(pre, "c", "") or ""
    if isinstance(config, Mapping):
        file_cfg = dict(config)
    elif config is not None:
        cfg_path = str(config)
    if cfg_path:
        file_cfg = C.read_yaml(cfg_path, field="c")
    where = cfg_path or None
    C.check_kind(file_cfg, "train", path=where)
    C.check_train_config({**file_cfg, **vars(pre), **overrides}, path=where)

    def pick(key, default):
        if key in overrides:
            return overrides[key]
        if hasattr(pre, key):
            return getattr(pre, key)
        return file_cfg.get(key, default)

    algorithm = pick("algorithm", "fixmatch")
    if algorithm not in name2alg:
        raise ConfigError(f"unknown algorithm {algorithm!r}; known: {', '.join(sorted(name2alg.keys()))}",
                          path=where, field="algorithm")
    imb = pick("imb_algorithm", None)
    imb = None if imb in (None, "None", "") else imb
    if imb is not None and imb not in name2imbalg:
        raise ConfigError(f"unknown imbalanced algorithm {imb!r}; known: "
                          f"{', '.join(sorted(name2imbalg.keys()))}", path=where,
                          field="imb_algorithm")
    classes = [name2alg[algorithm]] + ([name2imbalg[imb]] if imb is not None else [])
    for parser, only in ((base, False), (explicit, True)):
        for cls in classes:
            _add_algorithm_arguments(parser, cls, explicit_only=only)
    args = base.parse_args(argv)
    given = explicit.parse_args(argv)
    known = [d for _, d, *_ in C.USB_ARGS + C.PLUGIN_ARGS] + list(C.AS3L_ARGS) + \
        [a.name.lstrip("-") for cls in classes for a in cls.get_argument()]
    warnings_ = C.check_train_keys({**file_cfg, **overrides}, known, algorithm=algorithm,
                                   path=where, strict=strict, shared=shared)
    for source in (file_cfg, vars(given), overrides):
        for key, value in source.items():
            setattr(args, key, value)
    args.c = cfg_path
    args.imb_algorithm = imb
    try:
        args.gpu = parse_gpu(args.gpu)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc), field="gpu") from None
    if getattr(args, "save_name", None) in (None, "None"):
        args.save_name = f"{args.algorithm}_{args.dataset}"
    for key in ("lb_index_file", "lb_labels_file", "channels", "flip"):  # YAML's 'None'
        if getattr(args, key, None) in ("", "None"):
            setattr(args, key, None)
    args.distributed = args.world_size > 1 or bool(args.multiprocessing_distributed)  # main() redoes it
    C.emit_warnings(warnings_, warn)
    return args


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(args, hooks=()) -> dict:
    """USB's ``main``: run folder checks, then one process or ``mp.spawn`` of :func:`main_worker`.

    Returns the content of ``results.json`` (see :func:`train`).
    """
    if int(args.num_train_iter) % int(args.epoch) != 0:
        raise ConfigError(f"num_train_iter={args.num_train_iter} is not divisible by "
                          f"epoch={args.epoch}", field="epoch")
    save_path = os.path.join(args.save_dir, args.save_name)
    if os.path.exists(save_path) and not args.overwrite:
        raise ConfigError(f"run folder {save_path} already exists (set overwrite: True, or "
                          "resume: True with load_path)", field="overwrite")
    if args.resume:
        if not args.load_path:
            raise ConfigError("resume needs load_path (the checkpoint to continue)", field="load_path")
        if os.path.abspath(save_path) == os.path.abspath(args.load_path) and not args.overwrite:
            raise ConfigError("save and load paths are the same; set overwrite: True",
                              field="load_path")
    compat.resolve_device(args)  # a GPU asked for without CUDA fails before anything is touched
    # every input file is checked before the run folder is touched (USB's overwrite deletes it)
    checks.check_output_dir(args)
    checks.check_run_inputs(args)
    if os.path.exists(save_path) and args.overwrite and not args.resume:
        shutil.rmtree(save_path)
    if args.dist_url == "env://" and args.world_size == -1:
        args.world_size = int(os.environ["WORLD_SIZE"])
    args.distributed = args.world_size > 1 or args.multiprocessing_distributed
    device = compat.resolve_device(args)
    if device.type == "cuda":
        procs = torch.cuda.device_count()
    else:
        procs = max(1, int(getattr(args, "cpu_procs_per_node", 1) or 1))
        args.cpu_procs_per_node = procs
        if args.distributed and args.dist_backend != "gloo":
            warnings.warn(f"dist_backend={args.dist_backend!r} needs CUDA; using gloo on CPU")
            args.dist_backend = "gloo"
        if args.multiprocessing_distributed and procs * args.world_size == 1:
            args.multiprocessing_distributed = False  # one CPU process: no DDP needed
            args.distributed = False
    if os.path.exists(os.path.join(save_path, RESULTS_FILE)):
        os.remove(os.path.join(save_path, RESULTS_FILE))
    if args.multiprocessing_distributed and getattr(args, "algorithm", None) == "as3l_flexmatch":
        from .hooks import check_bank_world  # before spawning: one line, not a worker's trace
        check_bank_world(str(getattr(args, "prior_update_features", "extract")),
                         procs * int(args.world_size))
    if args.multiprocessing_distributed:
        import torch.multiprocessing as mp
        args.world_size = procs * args.world_size
        mp.spawn(main_worker, nprocs=procs, args=(procs, args, tuple(hooks)))
    else:
        main_worker(args.gpu if device.type == "cuda" else None, procs, args, tuple(hooks))
    path = os.path.join(save_path, RESULTS_FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"training finished without writing {path}")
    with open(path) as fh:
        return json.load(fh)


def build_model(config=None, **overrides):
    """The backbone USB builds for a config (``AlgorithmBase.set_model``), encoder loaded.

    The contract with the feature stage: ``use_pretrain: True`` and
    ``pretrain_path: <file>`` holding ``{'model': backbone_state_dict}`` (optionally with a
    ``module.`` prefix) initialise every backbone weight except the classifier — USB's
    ``nets.utils.load_checkpoint`` (WRN, ResNet, ViT) and the plugin's ``cnn4`` builders
    both skip ``classifier.*`` keys.

    Parameters
    ----------
    config : str, mapping or argparse.Namespace
        A config as :func:`get_config` takes, or an already parsed one.
    """
    from semilearn.core.utils import get_net_builder
    args = config if isinstance(config, argparse.Namespace) else get_config(config, **overrides)
    builder = get_net_builder(args.net, args.net_from_name)
    return builder(num_classes=args.num_classes, pretrained=args.use_pretrain,
                   pretrained_path=args.pretrain_path)


def build_algorithm(args, net_builder=None, tb_log=None, logger=None):
    """Instantiate ``args.algorithm`` (and ``imb_algorithm``) through the plugin's class."""
    from semilearn.algorithms import name2alg
    from semilearn.core.utils import get_net_builder
    from semilearn.imb_algorithms import name2imbalg
    if net_builder is None:
        net_builder = get_net_builder(args.net, args.net_from_name)
    bases = (name2alg[args.algorithm],)
    if getattr(args, "imb_algorithm", None):
        bases = (name2imbalg[args.imb_algorithm],) + bases
    cls = compat.plugin_algorithm(*bases)
    return cls(args=args, net_builder=net_builder, tb_log=tb_log, logger=logger)


def main_worker(gpu, ngpus_per_node, args, hooks=()):
    """USB's ``main_worker`` (one process): build, send to device, resume, train, report."""
    import torch.backends.cudnn as cudnn
    import torch.distributed as dist
    from semilearn.core.utils import TBLog, count_parameters, get_logger
    device = compat.resolve_device(args)
    local_rank = gpu if gpu is not None else 0
    if device.type == "cuda":
        args.gpu = gpu
    if args.seed is None:
        raise ConfigError("seed must be set (labeled sampling is synchronised by it)", field="seed")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    cudnn.deterministic = True
    cudnn.benchmark = True

    if args.distributed:
        if args.dist_url == "env://" and args.rank == -1:
            args.rank = int(os.environ["RANK"])
        if args.multiprocessing_distributed:
            args.rank = args.rank * ngpus_per_node + local_rank
        dist.init_process_group(backend=args.dist_backend, init_method=args.dist_url,
                                world_size=args.world_size, rank=args.rank)

    save_path = os.path.join(args.save_dir, args.save_name)
    is_main = args.rank % ngpus_per_node == 0
    tb_log = TBLog(save_path, "tensorboard", use_tensorboard=args.use_tensorboard) if is_main else None
    logger = get_logger(args.save_name, save_path, "INFO" if is_main else "WARNING")
    try:
        logger.info(f"Use {'GPU ' + str(args.gpu) if device.type == 'cuda' else 'CPU'} for training")
        model = build_algorithm(args, tb_log=tb_log, logger=logger)
        logger.info(f"Number of Trainable Params: {count_parameters(model.model)}")
        model.model = compat.send_model(args, model.model, device)
        model.ema_model = compat.send_model(args, model.ema_model, device, clip_batch=False)
        logger.info(f"Arguments: {model.args}")

        if args.resume and args.load_path and os.path.exists(args.load_path):
            model.load_model(args.load_path)
        elif args.resume:
            logger.info(f"Resume load path {args.load_path} does not exist; training from scratch")
        for item in hooks:
            hook, priority = item if isinstance(item, tuple) else (item, "NORMAL")
            model.register_hook(hook, None, priority)

        if hasattr(model, "warmup"):
            logger.info("Warmup stage")
            model.warmup()
        logger.info("Model training")
        model.train()
        for key, item in model.results_dict.items():
            logger.info(f"Model result - {key} : {item}")
        if hasattr(model, "finetune"):
            logger.info("Finetune stage")
            model.finetune()
        if is_main:
            _write_results(model, save_path)
        logging.warning(f"{'GPU' if device.type == 'cuda' else 'CPU process'} {args.rank} "
                        "training is FINISHED")
        return model
    finally:
        log_file = os.path.abspath(os.path.join(save_path, "log.txt"))
        for h in list(logger.handlers):  # get_logger adds one per call; don't pile them up
            if isinstance(h, logging.FileHandler) and h.baseFilename == log_file:
                logger.removeHandler(h)
                h.close()
        if args.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _write_results(model, save_path) -> dict:
    from ..io import atomic_write_json
    metrics = model.hooks_dict.get("MetricsCSVHook")
    last = getattr(metrics, "last_row", None)
    res = {
        "algorithm": model.algorithm,
        "best_acc": float(model.best_eval_acc),
        "best_it": int(model.best_it) + 1,
        "final_acc": float(last["eval_acc"]) if last else None,
        "final_it": int(last["iteration"]) if last else None,
        "train_time_s": float(model.elapsed_train_time()) if hasattr(model, "elapsed_train_time") else None,
        "resumed_wall_s": float(getattr(metrics, "resumed_wall_s", 0.0)),
        "resumed_cpu_s": getattr(metrics, "resumed_cpu_s", 0.0),
        "save_dir": os.path.abspath(save_path),
        "metrics_csv": os.path.abspath(os.path.join(save_path, "metrics.csv")),
        "results": {k: float(v) for k, v in getattr(model, "results_dict", {}).items()},
    }
    atomic_write_json(os.path.join(save_path, RESULTS_FILE), res)
    return res


def train(config, *, hooks=(), argv=None, strict=False, shared=False, **overrides) -> dict:
    """Train from a USB config (file or dict) with keyword overrides.

    Parameters
    ----------
    config : str, PathLike or mapping
        USB YAML config or dict of keys.
    hooks : sequence of Hook or (Hook, priority), optional
        Extra USB hooks registered after the algorithm is built (in-process runs; they
        must be picklable for ``multiprocessing_distributed``).
    argv : list of str, optional
        Extra command-line flags (as ``as3l train`` takes).
    strict, shared : bool
        How unknown config keys are reported (see :func:`get_config`).
    **overrides
        Config keys, e.g. ``num_train_iter=200, save_dir="runs", gpu="cpu"``.

    Returns
    -------
    dict
        ``best_acc`` (float, top-1 on the eval set, 0–1), ``best_it`` (iterations done when
        it was reached), ``final_acc`` / ``final_it`` (last evaluation), ``save_dir`` (the run
        folder ``<save_dir>/<save_name>``, absolute), ``metrics_csv``, ``train_time_s``,
        ``resumed_wall_s`` / ``resumed_cpu_s`` (seconds the earlier runs a resumed run
        continued from had spent up to its checkpoint: 0.0 for a fresh run; CPU None when
        unknown, e.g. with several processes), ``algorithm``, ``results`` (USB's
        ``results_dict``).
    """
    args = get_config(config, argv=argv, strict=strict, shared=shared, **overrides)
    if args.multiprocessing_distributed and str(args.dist_url).startswith("tcp://127.0.0.1"):
        args.dist_url = f"tcp://127.0.0.1:{_free_port()}"
    return main(args, hooks=hooks)


def main_from_argv(argv, *, strict=False, warn=None) -> dict:
    """``as3l train`` (and ``python -m as3l_plugin.usb.train``): flags as USB's train.py;
    ``strict`` / ``warn`` as :func:`get_config`."""
    args = get_config(argv=argv, strict=strict, warn=warn)
    if args.multiprocessing_distributed and str(args.dist_url).startswith("tcp://127.0.0.1"):
        args.dist_url = f"tcp://127.0.0.1:{_free_port()}"  # USB's train.py picks a free port too
    res = main(args)
    print(json.dumps({k: res[k] for k in ("best_acc", "best_it", "final_acc", "save_dir")}))
    return res


if __name__ == "__main__":  # pragma: no cover
    import sys
    main_from_argv(sys.argv[1:])
