"""Run a PyTorch script on tracegrad, unmodified: `python -m tracegrad.as_torch train.py --args`.

`import tracegrad as torch` names the module `torch` in one file only; a later `from torch import
nn` or `import torch.nn.functional as F` goes through `sys.modules` and finds the real PyTorch
when it is installed. `install()` makes `torch` and every `torch.X` resolve to `tracegrad` and
`tracegrad.X` for the whole process:

    import tracegrad.as_torch; tracegrad.as_torch.install()
    import torch                        # tracegrad
    from torch import nn                # tracegrad.nn
    import torch.nn.functional as F     # tracegrad.nn.functional

Call it before anything imports the real torch (a script run with `-m tracegrad.as_torch` gets
it first).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import runpy
import sys


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`torch.X` -> the module `tracegrad.X`, under both names."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch" and not name.startswith("torch."):
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        real = importlib.import_module("tracegrad" + spec.name[len("torch"):])
        sys.modules[spec.name] = real
        return real

    def exec_module(self, module):
        pass


def install() -> None:
    """Make `torch` mean `tracegrad` in this process (for modules imported from now on)."""
    import tracegrad
    for name in [n for n in sys.modules if n == "torch" or n.startswith("torch.")]:
        del sys.modules[name]
    sys.modules["torch"] = tracegrad
    for name, mod in list(sys.modules.items()):
        if name.startswith("tracegrad."):
            sys.modules["torch" + name[len("tracegrad"):]] = mod
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m tracegrad.as_torch script.py [args...]")
    install()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
