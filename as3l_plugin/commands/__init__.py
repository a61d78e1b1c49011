"""Argument parsers of the ``as3l`` subcommands, one module per group (see :mod:`as3l_plugin.cli`).

These modules must stay light: argparse only at import time; each command's function
imports what it needs when it runs.
"""
