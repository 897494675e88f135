"""Ranks as processes through `tracegrad launch` (mpiexec, the MPI communicator): a small GPT step
under DistributedDataParallel on 2 ranks equals the single-process run on the concatenated
batch (plain and ZeRO-1, with accumulation and clipping); a killed rank ends the run with an error
naming it within the timeout; a checkpoint written by 2 ranks resumes on 1 and on 2."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("mpi4py")
from tracegrad.cli.launch import find_mpiexec  # noqa: E402

try:
    find_mpiexec()
except SystemExit:
    pytest.skip("no mpiexec (install the dist extra)", allow_module_level=True)

SCRIPT = os.path.join(os.path.dirname(__file__), "dist_scripts", "gpt_dp.py")
LIMIT = 90          # seconds; each run takes ~10 s on a 2-core machine


def _run(n, *args, expect_ok=True):
    cmd = ([sys.executable, "-m", "tracegrad", "launch", "-n", str(n), "--timeout", "20", SCRIPT] if n
           else [sys.executable, SCRIPT])
    env = dict(os.environ, TRACEGRAD_COMM_TIMEOUT="20")
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=LIMIT, env=env)
    if expect_ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def _load(path):
    d = np.load(path)
    return d["losses"], {k: d[k] for k in d.files if k != "losses"}


def _same(a, b, weights_rtol=1e-5):
    # fp32: the ranks sum their halves of each reduction in another order than one process does
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    for k in a[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=weights_rtol, atol=1e-6, err_msg=k)


_RUNS: dict = {}


def _result(tmp_path_factory, ranks, *flags):
    """(losses, params) of a run, each run once per test session (tests share them)."""
    key = (ranks, flags)
    if key not in _RUNS:
        out = tmp_path_factory.mktemp("run") / "out.npz"
        _run(ranks, "--out", str(out), *flags)
        _RUNS[key] = _load(out)
    return _RUNS[key]


@pytest.mark.parametrize("ranks, zero", [(2, False), (2, True), (4, True)])
def test_ranks_equal_one_process(tmp_path_factory, ranks, zero):
    want = _result(tmp_path_factory, 0, "--accum", "2")        # one process: ZeRO-1 or not is the same
    _same(want, _result(tmp_path_factory, ranks, "--accum", "2", *(["--zero"] if zero else [])))


def test_a_killed_rank_ends_the_run_naming_it(tmp_path):
    t0 = time.time()
    p = _run(2, "--out", str(tmp_path / "x.npz"), "--die-at", "1", expect_ok=False)
    assert p.returncode != 0
    assert "rank 1 failed" in p.stderr and "died" in p.stderr, p.stderr[-2000:]
    assert time.time() - t0 < 60


def test_checkpoint_by_two_ranks_resumes_on_one_and_two(tmp_path, tmp_path_factory):
    ckpt, flags = str(tmp_path / "ckpt.safetensors"), ("--accum", "2", "--zero")
    full = _result(tmp_path_factory, 2, *flags)                # 3 steps without a break
    _run(2, "--out", str(tmp_path / "first.npz"), "--steps", "2", *flags, "--save", ckpt)
    _run(2, "--out", str(tmp_path / "two.npz"), "--steps", "1", "--first-step", "2", "--resume", ckpt, *flags)
    _run(0, "--out", str(tmp_path / "one.npz"), "--steps", "1", "--first-step", "2", "--resume", ckpt, "--accum", "2")
    two, one = _load(tmp_path / "two.npz"), _load(tmp_path / "one.npz")
    np.testing.assert_array_equal(two[0], full[0][2:])       # same ranks: the same run, bit for bit
    for k in full[1]:
        np.testing.assert_array_equal(two[1][k], full[1][k])
    _same(one, (full[0][2:], full[1]))                        # one rank: to fp32 rounding


def test_collectives_through_mpi():
    p = subprocess.run([sys.executable, "-m", "tracegrad", "launch", "-n", "3", "--timeout", "20",
                        os.path.join(os.path.dirname(__file__), "dist_scripts", "collectives.py")],
                       capture_output=True, text=True, timeout=LIMIT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("collectives ok") == 3


def test_rank_variables_of_every_launcher():
    from tracegrad.distributed import rank_env
    assert rank_env({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
                     "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})[:4] == (3, 4, 1, 2)
    assert rank_env({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"})[:3] == (1, 2, 1)
    assert rank_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                     "SLURM_NTASKS_PER_NODE": "4(x2)"})[:4] == (5, 8, 1, 4)
    assert rank_env({"RANK": "1", "WORLD_SIZE": "2", "PMI_RANK": "0", "PMI_SIZE": "2"}).rank == 1
    assert rank_env({}).world_size == 1


def test_distributed_sampler_shards_like_torch():
    import tracegrad as tg
    ds = list(range(10))
    shards = [list(tg.utils.data.DistributedSampler(ds, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]       # padded to 12 by wrapping around
    s = [tg.utils.data.DistributedSampler(ds, num_replicas=2, rank=r, seed=3) for r in range(2)]
    assert sorted(list(s[0]) + list(s[1])) == ds and len(s[0]) == 5
    s[0].set_epoch(1)
    assert list(s[0]) != list(tg.utils.data.DistributedSampler(ds, num_replicas=2, rank=0, seed=3))
    assert tg.nn.parallel.DistributedDataParallel is tg.nn.parallel.ddp.DistributedDataParallel


def test_tcp_rendezvous_shares_values_between_ranks():
    import socket
    import threading
    from tracegrad.runtime.rendezvous import TCPStore
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = TCPStore("127.0.0.1", port, True, timeout=10)
    got = {}
    client = threading.Thread(target=lambda: got.update(v=TCPStore("127.0.0.1", port, False, 10).get("id")))
    client.start()                                  # waits for the key, set after it asked
    time.sleep(0.2)
    server.set("id", tuple(range(-128, 0)))
    client.join(10)
    assert got["v"] == tuple(range(-128, 0))
    with pytest.raises(TimeoutError, match="not set"):
        TCPStore("127.0.0.1", port, False, timeout=0.3).get("missing")
    server.close()


def test_ctrl_c_reaches_every_rank(tmp_path):
    import signal
    script = tmp_path / "sleepy.py"
    script.write_text("import os, time\nprint('up', os.environ['RANK'], flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-m", "tracegrad", "launch", "-n", "2", str(script)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "up" not in p.stdout.readline() and p.poll() is None:     # a rank is running the script
            pass
        time.sleep(1)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 128 + signal.SIGINT and "SIGINT forwarded to every rank" in err, err[-2000:]
