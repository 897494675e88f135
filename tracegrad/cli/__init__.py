"""The `tracegrad` command (also `python -m tracegrad`): one subcommand per module of this
package, each with `add_arguments(parser)` and `run(args) -> int`.

    tracegrad launch -n 2 examples/train_gpt.py --max-iters 50
    tracegrad serve out/train_gpt/ckpt.safetensors --port 8000

A new subcommand is a module here plus one line in `COMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "launch": ("tracegrad.cli.launch", "run a script on N ranks (processes started through mpiexec)"),
    "serve": ("tracegrad.cli.serve", "serve a model over an OpenAI-compatible HTTP API"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tracegrad", description="tracegrad: a deep-learning compiler")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, (module, help_) in COMMANDS.items():
        modules[name] = importlib.import_module(module)
        modules[name].add_arguments(sub.add_parser(name, help=help_, description=modules[name].__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    return modules[args.command].run(args)
