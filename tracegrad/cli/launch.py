"""tracegrad launch -n N [--gpus] script.py args...: run `script.py` on N ranks.

The ranks are processes started through `mpiexec` (the one beside this Python, which the `dist`
extra's MPICH installs, else the one on the PATH, or TRACEGRAD_MPIEXEC). Each rank gets RANK,
LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE as torchrun sets them, so scripts that read them (and
`tg.distributed.init_process_group()`) know their place. With --gpus rank i uses cuda:<local rank>
and the NCCL backend. SIGINT and SIGTERM are forwarded to the ranks. When a rank fails (raises,
exits non-zero or dies) every rank is stopped and the command exits non-zero with that rank's
error.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

from . import rank_errors


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--nproc", type=int, required=True, help="number of ranks")
    p.add_argument("--gpus", action="store_true", help="one GPU per rank (cuda:<local rank>), NCCL between them")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds a collective may wait for another rank before it fails (default 300)")
    p.add_argument("--mpiexec", default=os.environ.get("TRACEGRAD_MPIEXEC"), help="the mpiexec to use")
    p.add_argument("script", help="the Python script each rank runs")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")


def find_mpiexec(given: str | None = None) -> str:
    if given:
        return given
    # the dist extra's MPICH puts mpiexec among this Python's scripts (a venv's bin, or ~/.local/bin)
    dirs = [os.path.dirname(sys.executable), sysconfig.get_path("scripts"),
            sysconfig.get_path("scripts", f"{os.name}_user")]
    beside = [os.path.join(d, "mpiexec") for d in dirs if d and os.path.exists(os.path.join(d, "mpiexec"))]
    found = beside[0] if beside else shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise SystemExit("tracegrad launch: no mpiexec found; install the MPI extra (pip install 'tracegrad[dist]') "
                         "or put an MPI's mpiexec on the PATH")
    return found


def rank_environment(gpus: bool, timeout: float | None, run_dir: str) -> dict:
    env = dict(os.environ)
    env.update(TRACEGRAD_RUN_DIR=run_dir, TRACEGRAD_MPI="1", TRACEGRAD_GPUS="1" if gpus else "0",
               NCCL_NVLS_ENABLE="0",    # NOTE: NVLink multicast stays off on the machines we run on
               # Open MPI: allow root (containers) and more ranks than cores (CI); MPICH ignores these
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    if timeout is not None:
        env["TRACEGRAD_COMM_TIMEOUT"] = str(timeout)
    return env


def _pump(src, dst, watch) -> None:
    """Copy the ranks' output through as it comes (progress bars too), and let `watch` read
    mpiexec's own report of which process ended the job."""
    fd = src.fileno()
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        dst.buffer.write(chunk)
        dst.flush()
        watch.scan(chunk)


def run(args) -> int:
    if args.nproc < 1:
        raise SystemExit(f"tracegrad launch: -n must be at least 1, got {args.nproc}")
    if not os.path.exists(args.script):
        raise SystemExit(f"tracegrad launch: no script {args.script!r}")
    run_dir = tempfile.mkdtemp(prefix="tracegrad-launch-")
    cmd = [find_mpiexec(args.mpiexec), "-n", str(args.nproc), sys.executable, "-m", "tracegrad.cli.rank",
           args.script, *args.args]
    proc = subprocess.Popen(cmd, env=rank_environment(args.gpus, args.timeout, run_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = rank_errors.Watch(run_dir, args.nproc)
    pumps = [threading.Thread(target=_pump, args=(src, dst, watch), daemon=True)
             for src, dst in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
    for t in pumps:
        t.start()

    interrupted = []

    def forward(signum, frame):
        interrupted.append(signum)
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while proc.poll() is None:
            watch.poll()
            time.sleep(0.05)
        for t in pumps:
            t.join(5)
        watch.poll()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if proc.returncode == 0 and not watch.failures:
        shutil.rmtree(run_dir, ignore_errors=True)
        return 0
    if interrupted:
        name = signal.Signals(interrupted[0]).name
        print(f"tracegrad launch: {name} forwarded to every rank; the run was stopped", file=sys.stderr, flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        return 128 + interrupted[0]
    print(watch.report(proc.returncode), file=sys.stderr, flush=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    return proc.returncode or 1
