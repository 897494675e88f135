"""Index checks inside compiled Triton steps, without a host sync per step.

Each checked index site of a program owns one row of a small int64 buffer (`IndexFlags`); a kernel
that meets a bad index stores `(1, value)` into its row and reads index 0 instead, so nothing is
read or written out of bounds. The host reads the buffer lazily: on the CPU (interpreter, numpy
buffers) right after each call, for free; on CUDA at the next point the user reads a value anyway
(`Tensor._concrete`: `.item()`, `.numpy()`, `.tolist()`, `print`, `bool`), or every
`TRACEGRAD_INDEX_CHECK_EVERY` calls (default 256; 0: never; read when the program is built), never on
every step (the bookkeeping costs about 0.6 us of host time a call). The error is
`index_range.out_of_range`, naming the op, the value and the user's line of the site.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from . import devices
from .index_range import Site, out_of_range


# NOTE: kernels write flags, never clear them; a program's flags are read (and cleared) only here
_PENDING: dict = {}        # id -> IndexFlags run since their last read
_LOCK = threading.Lock()


def every() -> int:
    return int(os.environ.get("TRACEGRAD_INDEX_CHECK_EVERY", "256") or 0)


class IndexFlags:
    """A program's flag buffer: row k = (set, bad value) for `sites[k]`, on the program's device."""

    def __init__(self, sites: list[Site], device: str = "cpu"):
        self.sites = list(sites)
        self.device = device
        self.buf = devices.transfer(np.zeros((max(1, len(self.sites)), 2), np.int64), device) \
            if device != "cpu" else np.zeros((max(1, len(self.sites)), 2), np.int64)
        self.calls, self.every = 0, every()
        self.lazy = device != "cpu"      # NOTE: reading numpy flags costs nothing: the CPU checks at once

    def row(self, k: int):
        """The buffer from row k on: what a kernel whose first site is k gets as `chk_ptr`."""
        return self.buf[k:]

    def ran(self) -> None:
        """After each call of the program: check now on the CPU, later on a GPU."""
        if not self.sites:
            return
        if not self.lazy:
            self.check()
            return
        self.calls += 1
        if self.every and self.calls % self.every == 0:
            self.check()
        elif id(self) not in _PENDING:
            with _LOCK:
                _PENDING[id(self)] = self

    def check(self) -> None:
        """Read the flags (a host sync on a GPU); raise for the first site that met a bad index."""
        with _LOCK:
            _PENDING.pop(id(self), None)
        host = devices.to_numpy(self.buf)
        hit = np.flatnonzero(host[:, 0])
        if not hit.size:
            return
        k, value = int(hit[0]), int(host[hit[0], 1])
        self.buf[...] = 0
        s = self.sites[k]
        raise out_of_range(s.op, value, s.size, s.where, s.allowed, s.lo)


def check_pending() -> None:
    """Read the flags of every program that ran since they were last read (nothing to do, and no
    sync, when none did); raise for the first bad index found."""
    if not _PENDING:
        return
    with _LOCK:
        todo = list(_PENDING.values())
    for flags in todo:
        flags.check()
