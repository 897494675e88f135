"""How `tracegrad launch` learns which rank failed first. Every rank writes `rank<i>.pid` when it
starts, `rank<i>.exit` when it ends well and `rank<i>.err` (its traceback) when it raises; the
launcher watches them: the first rank with an error file, or the first whose process vanished
without writing one, is the one named (one machine; across machines mpiexec's own message
names it)."""
from __future__ import annotations

import os
import time


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
        _, rank, text = min(self.failures)
        return f"tracegrad launch: rank {rank} failed; every rank was stopped.\n{text.rstrip()}"
