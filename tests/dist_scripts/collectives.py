"""Every collective through the process group's communicator, checked on every rank; run under
`tracegrad launch -n N` (MPI on CPUs) or `tracegrad launch -n N --gpus ... --device cuda` (NCCL)."""
import sys

import numpy as np

import tracegrad as tg

device = "cuda" if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cuda" else "cpu"
tg.distributed.init_process_group("nccl" if device == "cuda" else "gloo")
rank, n = tg.distributed.get_rank(), tg.distributed.get_world_size()
if device == "cuda":
    device = f"cuda:{rank % max(1, n)}"
comm = tg.distributed.current_comm()
everyone = tuple(range(n))


def host(a):
    return np.asarray(a.get() if hasattr(a, "get") else a)


def put(a):
    return tg.tensor(a).to(device)._data


xs = [np.arange(6, dtype=np.float32).reshape(3, 2) + 10 * r for r in range(n)]
x = put(xs[rank])
np.testing.assert_array_equal(host(comm.all_reduce(x, "sum", everyone)), sum(xs))
np.testing.assert_allclose(host(comm.all_reduce(x, "mean", everyone)), sum(xs) / n, rtol=1e-6)
np.testing.assert_array_equal(host(comm.all_reduce(x, "max", everyone)), xs[-1])
np.testing.assert_array_equal(host(comm.all_gather(x, 1, everyone)), np.concatenate(xs, axis=1))
big = put(np.ones((2 * n, 3), np.float32) * (rank + 1))
np.testing.assert_array_equal(host(comm.reduce_scatter(big, 0, everyone)), np.full((2, 3), n * (n + 1) / 2))
np.testing.assert_array_equal(host(comm.broadcast(x, n - 1, everyone)), xs[-1])
if n >= 2 and rank < 2:
    if rank == 0:
        comm.send(x, 1, (0, 1))
    else:
        np.testing.assert_array_equal(host(comm.recv((3, 2), np.float32, device, 0, (0, 1))), xs[0])
# sends never wait for their receive: every rank sends its right neighbour 4 MiB (past MPI's eager
# limit, where a blocking send waits for the receive) before it receives from its left one
ring = np.full(1 << 20, rank, np.float32)
comm.send(put(ring), (rank + 1) % n, everyone)
np.testing.assert_array_equal(host(comm.recv(ring.shape, np.float32, device, (rank - 1) % n, everyone)),
                              np.full(1 << 20, (rank - 1) % n, np.float32))
comm.wait_sends()

# as tensor functions, eagerly and inside a compiled step
t = tg.ones(4, device=device) * (rank + 1)
tg.distributed.all_reduce(t)
np.testing.assert_array_equal(t.numpy(), np.full(4, n * (n + 1) / 2))


@tg.compile
def step(a):
    b = a * 2
    tg.distributed.all_reduce(b, op=tg.distributed.ReduceOp.AVG)
    return b


np.testing.assert_allclose(step(tg.ones(4, device=device) * (rank + 1)).numpy(), np.full(4, n + 1), rtol=1e-6)
tg.distributed.barrier()
print(f"rank {rank}: collectives ok", flush=True)
tg.distributed.destroy_process_group()
