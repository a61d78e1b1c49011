"""Benchmarks, each runnable as ``python -m as3l_plugin.benchmarks.<name>``.

Every benchmark times its peer in the same run and prints the ratio; the README quotes the
figures together with the exact command.
"""
