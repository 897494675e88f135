"""Where in the user's program an op was called: the first stack frame outside tracegrad's own
machinery, and the module path (`blocks.3.attn`) that `nn.Module.__call__` keeps on a stack.
"""
from __future__ import annotations

import linecache
import os
import sys
import threading
from contextlib import contextmanager

from .ir.graph import Provenance

_HERE = os.path.dirname(os.path.abspath(__file__))
_INTERNAL = tuple(os.path.join(os.path.dirname(os.path.abspath(m.__file__)), "")
                  for m in (sys.modules["tracegrad.ir"],)) + (os.path.join(_HERE, ""),)
_USER_INSIDE = (os.path.join(_HERE, "models", ""),)   # our model zoo is user code for provenance

_state = threading.local()


def _internal(path: str) -> bool:
    return path.startswith(_INTERNAL) and not path.startswith(_USER_INSIDE) or path.startswith("<tracegrad")


def user_frame(depth: int = 1):
    f = sys._getframe(depth)
    while f is not None and _internal(f.f_code.co_filename):
        f = f.f_back
    return f


def here() -> Provenance:
    f = user_frame(2)
    if f is None:
        return Provenance()
    code = f.f_code
    fn = getattr(code, "co_qualname", code.co_name)
    line = linecache.getline(code.co_filename, f.f_lineno).strip()
    return Provenance(code.co_filename, f.f_lineno, line, fn, module_path())


def where() -> str:
    p = here()
    return f"{p.file}:{p.line}: {p.code}" if p.file else "<unknown>"


def module_path() -> str:
    stack = getattr(_state, "modules", None)
    return stack[-1] if stack else ""


@contextmanager
def module_scope(name: str):
    """Ops recorded inside carry `name` as their module path (nn.Module.__call__ uses this)."""
    stack = _state.__dict__.setdefault("modules", [])
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def _register_internal(path: str) -> None:
    """Let codegen/runtime folders count as internal once they are imported."""
    global _INTERNAL
    path = os.path.join(os.path.dirname(os.path.abspath(path)), "")
    if path not in _INTERNAL:
        _INTERNAL = _INTERNAL + (path,)
