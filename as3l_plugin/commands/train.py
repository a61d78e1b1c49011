"""``as3l train``: USB's ``train.py`` through the plugin (CPU-capable, ``as3l_flexmatch`` registered).

``as3l train --c CONFIG.yaml [USB flags]`` accepts the flags of USB's ``train.py``
(``--save_dir``, ``--num_train_iter``, ``--gpu``, ``--world-size``…), the plugin's keys
(``--lb_index_file``, ``--cpu_procs_per_node``) and every algorithm's own flags
(``--p_cutoff``, ``--prior_T``…). Flags given on the command line override the YAML file
(USB's ``train.py`` lets the file win silently; see :mod:`as3l_plugin.usb.train`).

This module imports only argparse at import time: the tables below describe USB's parser so
``as3l train --help`` is fast, and :mod:`as3l_plugin.usb.train` builds its typed parser from
the same tables.
"""

from __future__ import annotations

import argparse

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
    # as3l_flexmatch
    "prior_file", "prior_T", "prior_mode", "prior_update_interval", "prior_update_ks",
)


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


def usb_argv(ns: argparse.Namespace) -> list:
    """Turn a namespace of explicitly given flags (``explicit_only``) back into an argv list."""
    argv = []
    kinds = {dest: (opts[-1], kind) for opts, dest, kind, _, _ in USB_ARGS + PLUGIN_ARGS}
    for dest, value in vars(ns).items():
        if dest in kinds:
            opt, kind = kinds[dest]
            if kind == "flag":
                if value:
                    argv.append(opt)
            else:
                argv += [opt, str(value)]
        elif dest in ALGORITHM_FLAGS:
            argv += [f"--{dest}", str(value)]
    return argv


def _run_train(args) -> int:
    from ..usb.train import main_from_argv
    main_from_argv(usb_argv(args.usb_flags or argparse.Namespace()))
    return 0


class _Collect(argparse.Action):
    """Store every USB flag under ``args.usb_flags`` (a Namespace of explicit values)."""

    def __call__(self, parser, namespace, values, option_string=None):
        flags = getattr(namespace, "usb_flags", None)
        if flags is None:
            flags = argparse.Namespace()
            setattr(namespace, "usb_flags", flags)
        setattr(flags, self.dest, True if self.nargs == 0 else values)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a USB algorithm (as3l_flexmatch, flexmatch, fixmatch…) from a YAML config",
        description="USB's train.py through the plugin: `as3l train --c CONFIG.yaml [flags]`. "
                    "Runs on CPU when CUDA is absent (or with --gpu cpu); with CUDA it is USB's own "
                    "GPU/DDP path. Flags override the YAML. Writes <save_dir>/<save_name>/ "
                    "(checkpoints, log.txt, metrics.csv, results.json).")
    for opts, dest, kind, default, help_ in USB_ARGS + PLUGIN_ARGS:
        extra = {"nargs": 0} if kind == "flag" else {"metavar": kind.upper()}
        p.add_argument(*opts, dest=dest, action=_Collect, default=argparse.SUPPRESS,
                       help=f"{help_} (USB default: {default!r})", **extra)
    g = p.add_argument_group("algorithm flags (typed by the chosen algorithm's get_argument)")
    for name in ALGORITHM_FLAGS:
        g.add_argument(f"--{name}", dest=name, action=_Collect, default=argparse.SUPPRESS,
                       metavar="V", help=argparse.SUPPRESS if not name.startswith("prior") else
                       "as3l_flexmatch: see `as3l_plugin.usb.algorithm`")
    p.set_defaults(func=_run_train, usb_flags=None)
