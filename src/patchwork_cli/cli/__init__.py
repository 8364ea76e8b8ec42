"""The typer command line: one module per command, each a thin layer over the core.

Command modules import the core (pandas, yaml, ...) inside their functions so that
`patchwork --help` and argument errors stay fast.
"""
