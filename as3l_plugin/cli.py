"""``as3l``: the command-line front door.

Each group of subcommands lives in a module of :mod:`as3l_plugin.commands` that exposes
``register(subparsers)``; those modules import only argparse-level code, and each command
imports its heavy dependencies (torch, scikit-learn, semilearn) when it runs, so
``as3l <cmd> --help`` is fast.

Errors a user can cause (:class:`as3l_plugin.errors.AS3LError`) print one line
``as3l: error: <message>`` and exit with code 2; ``--debug`` shows the traceback. Bad
command-line syntax (a missing option, ``--budget 2.5``) is reported the same way: one line
``as3l <command>: error: argument --budget: invalid int value: '2.5' (see as3l <command>
--help)``, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys

from . import __version__

#: command modules, in the order their subcommands appear in ``as3l --help``
COMMAND_MODULES = (
    "as3l_plugin.commands.offline",
    "as3l_plugin.commands.annotate",
    "as3l_plugin.commands.features",
    "as3l_plugin.commands.train",
    "as3l_plugin.commands.pipeline",
    "as3l_plugin.commands.data",
)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``<prog>: error: <message>``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="as3l",
        description="Active Self-Semi-Supervised Learning (AS3L) for USB: pick which samples "
                    "to label, propagate a prior, and train as3l_flexmatch.",
        epilog="Run `as3l <command> --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"as3l_plugin {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command group is not installed in this build
                continue
            raise
        module.register(sub)
    return parser


@contextlib.contextmanager
def _config_warnings_as_lines():
    """Show each :class:`~as3l_plugin.errors.ConfigWarning` (a config key nothing reads) as
    one line ``warning: <file>: <key>: ...`` on stderr, every time; other warnings as usual."""
    import warnings

    from .errors import ConfigWarning
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ConfigWarning):
                print(f"warning: {message}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)
        warnings.showwarning = showwarning
        warnings.simplefilter("always", ConfigWarning)
        yield


def run(argv=None):
    """Parse ``argv`` and run the command, as :func:`main` does.

    Returns
    -------
    (exit_code, error) : (int, AS3LError or None)
        ``error`` is the user-facing error that was reported (exit code 2), else None.
        Command-line syntax errors exit through ``SystemExit`` (code 2), like argparse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2, None
    from .errors import AS3LError
    try:
        with _config_warnings_as_lines():
            rc = args.func(args)
    except AS3LError as exc:
        if args.debug:
            raise
        text = " ".join(str(exc).split())  # one line, whatever the message holds
        print(f"as3l: error: {text}", file=sys.stderr)
        return 2, exc
    except KeyboardInterrupt:
        print("as3l: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130, None
    return int(rc or 0), None


def main(argv=None) -> int:
    """Entry point of the ``as3l`` console script; returns the exit code."""
    return run(argv)[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
