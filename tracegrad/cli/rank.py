"""One rank of `tracegrad launch` (`python -m tracegrad.cli.rank script.py args...`, started by
mpiexec): sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE from the MPI launcher's variables,
runs the script as `__main__`, and records how it ended for the launcher (`rank_errors.py`)."""
from __future__ import annotations

import os
import runpy
import sys
import time
import traceback
from ..distributed.env import rank_env


def main(argv: list[str]) -> None:
    env = rank_env({k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                      "LOCAL_WORLD_SIZE")})
    os.environ.update(RANK=str(env.rank), WORLD_SIZE=str(env.world_size), LOCAL_RANK=str(env.local_rank),
                      LOCAL_WORLD_SIZE=str(env.local_world_size))
    run_dir = os.environ.get("TRACEGRAD_RUN_DIR")

    def record(kind: str, text: str = "") -> None:
        if run_dir:
            path = os.path.join(run_dir, f"rank{env.rank}.{kind}")
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)       # the launcher never reads half a file

    record("pid", str(os.getpid()))
    script = argv[0]
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            record("err", f"{time.time()}\nrank {env.rank} exited with status {e.code}\n")
            sys.stderr.flush()
            os._exit(e.code if isinstance(e.code, int) else 1)
    except BaseException as e:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        record("err", f"{time.time()}\nrank {env.rank}: {type(e).__name__}: {e}\n{text}")
        sys.stderr.write(f"[rank {env.rank}] {text}")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)         # NOTE: no MPI_Finalize, which would wait for the other ranks; mpiexec stops them
    sys.stdout.flush()
    record("exit", "0")


if __name__ == "__main__":
    main(sys.argv[1:])
