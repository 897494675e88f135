"""Where generated kernels live: in memory by structural key, on disk by source hash.

`load(source)` returns the `@triton.jit` function of a generated kernel. Kernels with the same
structure (same code once comments and the name are dropped: the twelve identical layer-norm
kernels of a GPT) share one function, so Triton compiles each structure once per process. The
source is written to `<cache>/triton/<sha256>.py` and imported from there (Triton reads a
kernel's source with `inspect`, so it must live in a file); a later process finds it again.

The cache directory is `$TRACEGRAD_CACHE_DIR`, else `~/.cache/tracegrad`, else (a home that cannot
be written: a read-only container, a service account) a folder in the temp directory.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading

PRELUDE = "import triton\nimport triton.language as tl\nfrom tracegrad.runtime.triton_lib import *  # noqa: F401,F403\n\n\n"

_memory: dict[str, object] = {}
_lock = threading.Lock()
stats = {"memory_hits": 0, "disk_hits": 0, "written": 0}


def cache_dir() -> str:
    env = os.environ.get("TRACEGRAD_CACHE_DIR")
    if env:
        return env
    home = os.path.join(os.path.expanduser("~"), ".cache", "tracegrad")
    return home if _writable(home) else os.path.join(tempfile.gettempdir(), f"tracegrad-cache-{os.getuid()}")


@functools.lru_cache(maxsize=None)
def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(source: str, name: str, key: str | None = None):
    """The jit function `name` defined by `source` (a `@triton.jit def name(...)` block)."""
    key = key or source
    with _lock:
        fn = _memory.get(key)
        if fn is not None:
            stats["memory_hits"] += 1
            return fn
        text = PRELUDE + source
        digest = source_hash(text)
        folder = os.path.join(cache_dir(), "triton")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{digest}.py")
        if os.path.exists(path):
            stats["disk_hits"] += 1
        else:
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)      # NOTE: atomic, so concurrent processes never read half a file
            stats["written"] += 1
        modname = f"tracegrad_kernel_{digest}"
        module = sys.modules.get(modname)
        if module is None:
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[modname] = module
        fn = getattr(module, name)
        _memory[key] = fn
        return fn


def clear_memory() -> None:
    with _lock:
        _memory.clear()
