"""``as3l train``: USB's ``train.py`` through the plugin (CPU-capable, ``as3l_flexmatch`` registered).

``as3l train --c CONFIG.yaml [USB flags]`` accepts the flags of USB's ``train.py``
(``--save_dir``, ``--num_train_iter``, ``--gpu``, ``--world-size``…), the plugin's keys
(``--lb_index_file``, ``--cpu_procs_per_node``) and every algorithm's own flags
(``--p_cutoff``, ``--prior_T``…). Flags given on the command line override the YAML file
(USB's ``train.py`` lets the file win silently; see :mod:`as3l_plugin.usb.train`).

The config's keys are checked before training (:func:`as3l_plugin.config.check_train_keys`):
a misspelt plugin key is an error, another unknown key one ``warning:`` line (a
:class:`~as3l_plugin.errors.ConfigWarning` that :mod:`as3l_plugin.cli` prints; ``--strict``:
an error). This module imports only argparse and :mod:`as3l_plugin.config` (the USB flag
table, shared with :mod:`as3l_plugin.usb.train`) at import time, so ``as3l train --help`` is
fast.
"""

from __future__ import annotations

import argparse

from ..config import (  # noqa: F401  (the flag table lives in the library; re-exported)
    ALGORITHM_FLAGS, PLUGIN_ARGS, USB_ARGS, add_usb_arguments, parse_gpu, str2bool)


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
    main_from_argv(usb_argv(args.usb_flags or argparse.Namespace()), strict=args.strict)
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
    p.add_argument("--strict", action="store_true",
                   help="config keys that nothing reads are errors, not warnings")
    p.set_defaults(func=_run_train, usb_flags=None)
