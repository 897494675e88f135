"""Choices made by timing on one GPU, kept on disk so a later process does not time them again.

The first call of a compiled step on CUDA times cuBLAS against the Triton matmul template for each
matmul shape it meets (`externs._cuda_matmul`): about a second for a GPT-2 step, paid again by every
process. The winner of each timing is written to `<cache>/measured.json`, under a tag naming the
GPU, the CUDA runtime and Triton (what the timing depends on); a process on the same tag reads it
back instead of timing. Entries are only hints: a missing or unreadable file means timing again.

    choice = measured.recall("matmul", key, device_id)        # None: not timed on this GPU yet
    measured.remember("matmul", key, device_id, "cublas")
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import threading

from .kernel_cache import cache_dir

_lock = threading.Lock()
_loaded: dict | None = None


def _path() -> str:
    return os.path.join(cache_dir(), "measured.json")


@functools.lru_cache(maxsize=None)
def device_tag(device_id: int) -> str:
    import cupy
    import triton
    props = cupy.cuda.runtime.getDeviceProperties(device_id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"{name}|cuda {cupy.cuda.runtime.runtimeGetVersion()}|triton {triton.__version__}"


def _read() -> dict:
    try:
        with open(_path()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _entries() -> dict:
    global _loaded
    if _loaded is None:
        _loaded = _read()
    return _loaded


def recall(kind: str, key, device_id: int):
    with _lock:
        return _entries().get(device_tag(device_id), {}).get(f"{kind} {key!r}")


def remember(kind: str, key, device_id: int, value) -> None:
    """Keep `value` in memory and on disk (merged with what other processes wrote meanwhile; a
    write that fails leaves the hint out, nothing else)."""
    tag, name = device_tag(device_id), f"{kind} {key!r}"
    with _lock:
        _entries().setdefault(tag, {})[name] = value
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            data = _read()
            data.setdefault(tag, {})[name] = value
            fd, tmp = tempfile.mkstemp(dir=cache_dir(), suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=0, sort_keys=True)
            os.replace(tmp, _path())      # NOTE: atomic: a reader sees the old file or the new one
        except OSError:
            pass


def forget() -> None:
    """Drop what this process read (tests point the cache at another folder)."""
    global _loaded
    with _lock:
        _loaded = None
