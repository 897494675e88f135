"""How `tracegrad launch` learns which rank failed first. Every rank writes `rank<i>.pid` when it
starts, `rank<i>.exit` when it ends well and `rank<i>.err` (its traceback) when it raises; the
launcher watches them, and reads mpiexec's own report of the process that ended the job
(MPICH: "BAD TERMINATION ... PID n", Open MPI: "process rank r with PID n"). The rank named is the
first with an error file, else the one mpiexec names, else the first whose process vanished
without writing either file."""
from __future__ import annotations

import os
import re
import time

_MPIEXEC_SAYS = (re.compile(rb"process rank (\d+) with PID"), re.compile(rb"PID (\d+) RUNNING AT"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:        # a zombie (exited, not yet reaped by mpiexec) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Watch:
    def __init__(self, run_dir: str, n: int):
        self.dir, self.n = run_dir, n
        self.failures: list[tuple[float, int, str]] = []    # (when, rank, what)
        self._seen: set[int] = set()
        self._tail = b""
        self.named: tuple[str, int] | None = None     # ("rank", r) or ("pid", p), as mpiexec reported it

    def scan(self, chunk: bytes) -> None:
        self._tail = (self._tail + chunk)[-4096:]
        if self.named is None:
            for kind, pattern in zip(("rank", "pid"), _MPIEXEC_SAYS):
                m = pattern.search(self._tail)
                if m:
                    self.named = (kind, int(m.group(1)))
                    return

    def _named_rank(self) -> int | None:
        if self.named is None:
            return None
        kind, n = self.named
        if kind == "rank":
            return n
        return next((r for r in range(self.n) if (self._read(f"rank{r}.pid") or "").strip() == str(n)), None)

    def _read(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.dir, name)) as f:
                return f.read()
        except OSError:
            return None

    def poll(self) -> None:
        for r in range(self.n):
            if r in self._seen:
                continue
            err = self._read(f"rank{r}.err")
            if err is not None:
                when, _, text = err.partition("\n")
                self.failures.append((float(when), r, text))
                self._seen.add(r)
                continue
            pid = self._read(f"rank{r}.pid")
            if pid and not _alive(int(pid)) and self._read(f"rank{r}.exit") is None:
                time.sleep(0.05)          # it may be writing its error file right now
                if self._read(f"rank{r}.err") is None and self._read(f"rank{r}.exit") is None:
                    self.failures.append((time.time(), r, f"rank {r} (pid {int(pid)}) died without an error "
                                                          "(killed by a signal, or out of memory)\n"))
                    self._seen.add(r)

    def report(self, returncode: int) -> str:
        if not self.failures:
            return f"tracegrad launch: mpiexec exited with status {returncode}"
        errors = [f for f in self.failures if "died without an error" not in f[2]]
        named = self._named_rank()
        if not errors and named is not None:       # mpiexec saw which one died first
            dead = [f for f in self.failures if f[1] == named]
            errors = dead or [(0.0, named, f"rank {named} died without an error (mpiexec: {self.named[0]} "
                                           f"{self.named[1]})\n")]
        _, rank, text = min(errors or self.failures)
        return f"tracegrad launch: rank {rank} failed; every rank was stopped.\n{text.rstrip()}"
