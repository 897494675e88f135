"""Ranks as threads (`LocalWorld`): the collectives, and data parallelism checked against the
single-device run of the same step (same losses and parameters to fp32 rounding)."""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.models.gpt import GPT, GPTConfig
from tracegrad.runtime.comm_local import LocalWorld


def test_local_collectives():
    def rank_main(rank):
        comm = tg.distributed.current_comm()
        x = np.arange(6, dtype=np.float32).reshape(3, 2) + 10 * rank
        everyone = (0, 1, 2)
        out = dict(sum=comm.all_reduce(x, "sum", everyone), mean=comm.all_reduce(x, "mean", everyone),
                   max=comm.all_reduce(x, "max", everyone), gather=comm.all_gather(x, 1, everyone),
                   scatter=comm.reduce_scatter(x, 0, everyone), root=comm.broadcast(x, 2, everyone))
        if rank in (0, 1):       # a sub-group, and a pair exchange
            out["pair"] = comm.all_reduce(x, "sum", (0, 1))
            comm.send(x + 0.5, 1 - rank, (0, 1))
            out["recv"] = comm.recv((3, 2), np.float32, "cpu", 1 - rank, (0, 1))
        return out

    res = tg.distributed.run_local(rank_main, 3)
    xs = [np.arange(6, dtype=np.float32).reshape(3, 2) + 10 * r for r in range(3)]
    for rank, out in enumerate(res):
        np.testing.assert_array_equal(out["sum"], sum(xs))
        np.testing.assert_allclose(out["mean"], sum(xs) / 3)
        np.testing.assert_array_equal(out["max"], xs[2])
        np.testing.assert_array_equal(out["gather"], np.concatenate(xs, axis=1))
        np.testing.assert_array_equal(out["scatter"], sum(xs)[rank:rank + 1])
        np.testing.assert_array_equal(out["root"], xs[2])
        if rank < 2:
            np.testing.assert_array_equal(out["pair"], xs[0] + xs[1])
            np.testing.assert_array_equal(out["recv"], xs[1 - rank] + 0.5)


def test_a_failing_rank_releases_the_others():
    def rank_main(rank):
        if rank == 1:
            raise ValueError("rank 1 fails")
        tg.distributed.current_comm().all_reduce(np.ones(2), "sum", (0, 1, 2))

    with pytest.raises(ValueError, match="rank 1 fails"):
        tg.distributed.run_local(rank_main, 3)
    assert not [t for t in threading.enumerate() if t.name.startswith("tracegrad-rank")]


CONFIG = GPTConfig(block_size=16, vocab_size=31, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


def _train(model, mesh, batches, backend="numpy"):
    # SGD: Adam would turn the rounding noise of gradients that are zero in exact arithmetic (a
    # key bias's) into whole steps of lr, hiding what this test compares
    opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train_step(x, y):
        _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
        return loss

    step = tg.compile(train_step, mesh=mesh, backend=backend)
    losses = [float(step(tg.tensor(x), tg.tensor(y)).item()) for x, y in batches]
    return losses, {k: v.numpy().copy() for k, v in model.state_dict().items()}, step


def _local(batches, rank, n):
    """Rank `rank`'s rows of each global batch: what it passes to the step (DDP's semantics)."""
    rows = len(batches[0][0]) // n
    return [(x[rank * rows:(rank + 1) * rows], y[rank * rows:(rank + 1) * rows]) for x, y in batches]


@pytest.mark.parametrize("dp, backend", [(2, "numpy"), (4, "numpy"), (2, "triton")])
def test_data_parallel_training_equals_one_device(dp, backend):
    if backend == "triton":
        pytest.importorskip("triton")
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 31, (8, 16)), rng.integers(0, 31, (8, 16))) for _ in range(3)]
    tg.manual_seed(0)
    model = GPT(CONFIG)
    replicas = [copy.deepcopy(model) for _ in range(dp)]
    want_losses, want_params, _ = _train(model, None, batches, backend)

    mesh = tg.Mesh(dp=dp)
    runs = tg.distributed.run_local(lambda rank, m: _train(m, mesh, _local(batches, rank, dp), backend), dp,
                                    [(m,) for m in replicas])
    for step_i, want in enumerate(want_losses):    # the shards' mean is the global batch's mean
        np.testing.assert_allclose(np.mean([r[0][step_i] for r in runs]), want, rtol=1e-5)
    for losses, params, step in runs:
        for name, want in want_params.items():
            np.testing.assert_allclose(params[name], want, rtol=1e-4, atol=1e-6, err_msg=name)
        graphs = step.graphs()      # the single-device graph, every gradient's all_reduce, one per flat bucket
        assert not any(n.op == "all_reduce" for n in graphs["traced"].nodes)
        assert sum(n.op == "all_reduce" for n in graphs["dp"].nodes) == len(list(model.parameters()))
        assert sum(n.op == "all_reduce" for n in graphs["optimized"].nodes) == len(list(model.parameters()))
        assert sum(n.op == "all_reduce" for n in graphs["bucketed"].nodes) == 1
        assert step.entries[-1].stages["traced"].inputs[0].type.shape == (8 // dp, 16)   # this rank's rows


def test_mesh_misuse_is_explained():
    step = tg.compile(lambda x: x * 2, mesh=tg.Mesh(dp=2))
    with pytest.raises(RuntimeError, match=r"compiled for Mesh\(dp=2.*rank 0 of 1.*run_local"):
        step(tg.ones(4))
    assert LocalWorld(2).comm(1).rank == 1


def test_bucketing_keeps_values_and_order():
    from tracegrad.codegen.numpy_program import generate
    from tracegrad.ir import GraphBuilder, TensorType, verify
    from tracegrad.ir.passes.parallel import bucket_all_reduces
    from tracegrad.ir.types import float32

    b = GraphBuilder("g")
    xs = [b.input(f"x{i}", TensorType(shape, float32)) for i, shape in enumerate([(2, 3), (4,), (3, 1)])]
    r0 = b.all_reduce(xs[0], op="sum", group=(0, 1))
    r1 = b.all_reduce(xs[1], op="sum", group=(0, 1))
    y = b.mul(r0, 2.0)                           # reads r0: the bucket {r0, r1} goes out before this
    r2 = b.all_reduce(xs[2], op="mean", group=(0, 1))
    graph = b.finish([y, r1, r2])
    bucketed = bucket_all_reduces(graph)
    verify(bucketed)
    assert [n.op for n in bucketed.nodes].count("all_reduce") == 2
    assert [n.op for n in bucketed.nodes].index("concat") < [n.op for n in bucketed.nodes].index("mul")

    def rank_main(rank, g):
        comm = tg.distributed.current_comm()
        arrays = [np.arange(np.prod(v.type.shape), dtype=np.float32).reshape(v.type.shape) * (rank + 1)
                  for v in g.inputs]
        return generate(g, comm)(*arrays)

    want = tg.distributed.run_local(rank_main, 2, [(graph,)] * 2)
    got = tg.distributed.run_local(rank_main, 2, [(bucketed,)] * 2)
    for want_rank, got_rank in zip(want, got):
        for w, o in zip(want_rank, got_rank):
            np.testing.assert_array_equal(o, w)
    np.testing.assert_array_equal(got[0][1], np.arange(4, dtype=np.float32) * 3)   # rank 0's + rank 1's


def test_dropout_under_data_parallelism_is_deterministic():
    # each rank draws from a generator of its own, started from the caller's state
    config = GPTConfig(block_size=16, vocab_size=31, n_layer=1, n_head=2, n_embd=16, dropout=0.3)
    rng = np.random.default_rng(1)
    batches = [(rng.integers(0, 31, (4, 16)), rng.integers(0, 31, (4, 16))) for _ in range(3)]
    tg.manual_seed(0)
    model = GPT(config)

    def run():
        tg.manual_seed(5)
        return tg.distributed.run_local(lambda rank, m: _train(m, tg.Mesh(dp=2), _local(batches, rank, 2)), 2,
                                        [(copy.deepcopy(model),) for _ in range(2)])
    first, second = run(), run()
    np.testing.assert_array_equal(tg.get_rng_state().numpy(), [5, 0])   # the ranks drew from their own
    for a, b in zip(first, second):
        assert a[0] == b[0]
        for name in a[1]:
            np.testing.assert_array_equal(a[1][name], b[1][name])
    for name in first[0][1]:                       # the ranks applied the same update
        np.testing.assert_array_equal(first[0][1][name], first[1][1][name])


def test_mesh_groups_lay_tp_innermost_then_cp_pp_dp():
    m = tg.Mesh(dp=2, pp=2, cp=2, tp=2)
    assert m.size == 16 and m.coords(0) == {"dp": 0, "pp": 0, "cp": 0, "tp": 0}
    assert m.coords(13) == {"dp": 1, "pp": 1, "cp": 0, "tp": 1}
    assert m.group("tp", 13) == (12, 13) and m.group("cp", 13) == (13, 15)
    assert m.group("pp", 13) == (9, 13) and m.group("dp", 13) == (5, 13)
    assert all(m.rank_of(**m.coords(r)) == r for r in range(16))
    # every rank sits in exactly one group of each axis
    for axis in ("dp", "pp", "cp", "tp"):
        groups = m.groups(axis)
        assert sorted(r for g in groups for r in g) == list(range(16))
    assert tg.Mesh(dp=4).dp_group(2) == (0, 1, 2, 3) and tg.Mesh(dp=2, tp=2).dp_group(3) == (1, 3)
    with pytest.raises(ValueError, match="outside"):
        m.coords(16)


def test_dp_is_a_stage_after_the_single_device_graph():
    tg.manual_seed(0)
    model = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.ReLU(), tg.nn.Linear(8, 2))

    def rank_main(rank, m):
        opt = tg.optim.SGD(m.parameters(), lr=0.1)

        def step(x):
            loss = m(x).pow(2).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            return loss
        compiled = tg.compile(step, mesh=tg.Mesh(dp=2))
        compiled(tg.ones(3, 4) * (rank + 1))
        return compiled, {k: v.numpy() for k, v in m.state_dict().items()}

    (step, params0), (_, params1) = tg.distributed.run_local(rank_main, 2, [(copy.deepcopy(model),) for _ in range(2)])
    for name in params0:                            # every rank applied the averaged update
        np.testing.assert_array_equal(params0[name], params1[name])
    traced, dp, bucketed = step.graphs()["traced"], step.graphs()["dp"], step.graphs()["bucketed"]
    assert "stage 0: traced" in step.ir("traced") and "all_reduce" not in step.ir("traced")
    assert "stage 1: dp" in step.ir("dp")
    marked = dict(traced.meta["state_grads"])       # gradient value -> parameter input, by name
    assert sorted(marked.values()) == sorted(v.name for v in traced.inputs[1:5])
    # dp: each gradient averaged right after the node computing it, and nothing else changed
    reduces = [(i, n) for i, n in enumerate(dp.nodes) if n.op == "all_reduce"]
    assert len(reduces) == 4 and len(dp.nodes) == len(traced.nodes) + 4
    for i, n in reduces:
        assert n.attrs["op"] == "mean" and n.attrs["group"] == (0, 1) and n.tag == "dp"
        assert dp.nodes[i - 1].outputs[0] is n.inputs[0] and n.inputs[0].name in marked
    # bucketed: one flat all_reduce, sent right after the last gradient, before the optimizer update
    ops = [n for n in bucketed.nodes if n.op == "all_reduce"]
    assert len(ops) == 1 and ops[0].inputs[0].type.shape == (8 * 4 + 8 + 2 * 8 + 2,)
    first_update = next(i for i, n in enumerate(bucketed.nodes) if n.phase == "update")
    assert bucketed.nodes.index(ops[0]) < first_update
    assert all(n.phase != "backward" or n.tag == "bucket" for n in bucketed.nodes[bucketed.nodes.index(ops[0]):])


def test_dp_pass_on_a_graph_alone():
    from tracegrad.ir import GraphBuilder, TensorType
    from tracegrad.ir.passes.parallel import data_parallel
    from tracegrad.ir.types import float32

    b = GraphBuilder("g")
    w, g_in = b.input("w", TensorType((3,), float32)), b.input("w_grad", TensorType((3,), float32))
    g = b.mul(g_in, 2.0)
    new_w = b.sub(w, g)
    graph = b.finish([new_w, g], meta={"state_grads": ((g.name, "w"),)})
    out = data_parallel(graph, (0, 1))
    ar = next(n for n in out.nodes if n.op == "all_reduce")
    assert ar.inputs[0] is g and out.outputs[1] is ar.outputs[0]     # the written-back .grad is the mean
    assert next(n for n in out.nodes if n.op == "sub").inputs[1] is ar.outputs[0]
    assert data_parallel(graph, (0,)).nodes == graph.nodes            # one rank: nothing to do
    assert data_parallel(graph, (0, 1), params=frozenset()).nodes == graph.nodes


def test_ranks_that_traced_different_graphs_are_named():
    def rank_main(rank):
        a, b = tg.nn.Linear(4, 4), tg.nn.Linear(4, 2)
        opt = tg.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1)

        def step(x):           # a branch one rank takes: rank 1 never reaches `b`, so its gradients differ
            (b(a(x)) if rank == 0 else a(x)).sum().backward()
            opt.step()
            opt.zero_grad()
        tg.compile(step, mesh=tg.Mesh(dp=2))(tg.ones(2, 4))

    with pytest.raises(RuntimeError, match=r"dp group \(0, 1\) compiled different graphs \(ranks \[0\]: 1 collectives"):
        tg.distributed.run_local(rank_main, 2)


@pytest.mark.parametrize("compiled, zero", [(False, False), (True, False), (True, True), (False, True)])
def test_ddp_and_zero1_equal_one_device(compiled, zero):
    from tracegrad.nn.parallel import DistributedDataParallel as DDP
    tg.manual_seed(0)
    base = tg.nn.Sequential(tg.nn.Linear(4, 8), tg.nn.ReLU(), tg.nn.Linear(8, 2))
    xs = [np.random.default_rng(i).standard_normal((4, 4)).astype(np.float32) for i in range(3)]

    def train(rank, model, n):
        ps = list(model.module.parameters()) if n > 1 else list(model.parameters())
        opt = (tg.distributed.ZeroRedundancyOptimizer(ps, tg.optim.SGD, lr=0.1, momentum=0.9) if zero and n > 1
               else tg.optim.SGD(ps, lr=0.1, momentum=0.9))

        def accumulate(x):
            (model(x).pow(2).mean() / 2).backward()

        def update(x):
            (model(x).pow(2).mean() / 2).backward()
            tg.nn.utils.clip_grad_norm_(ps, 0.05)       # small enough to clip: the global norm matters
            opt.step()
            opt.zero_grad()
        if compiled:
            accumulate, update = tg.compile(accumulate), tg.compile(update)
        rows = 4 // n
        for x in xs:                                     # two micro-batches per step, the first without sync
            half = [tg.tensor(x[:2][rank * rows // 2:(rank + 1) * rows // 2]),
                    tg.tensor(x[2:][rank * rows // 2:(rank + 1) * rows // 2])]
            if n > 1:
                with model.no_sync():
                    accumulate(half[0])
            else:
                accumulate(half[0])
            update(half[1])
        if compiled and n > 1:     # no_sync: the accumulating step's graph has no dp stage, no all_reduce
            assert "dp" not in accumulate.graphs() and "dp" in update.graphs()
        return {k.removeprefix("module."): v.numpy() for k, v in model.state_dict().items()}

    want = train(0, copy.deepcopy(base), 1)
    got = tg.distributed.run_local(lambda r, m: train(r, DDP(m), 2), 2, [(copy.deepcopy(base),) for _ in range(2)])
    for rank_params in got:
        for k, w in want.items():      # fp32: the halves are summed in another order than the whole
            np.testing.assert_allclose(rank_params[k], w, rtol=1e-5, atol=1e-7, err_msg=k)


def test_ddp_averages_gradients_of_a_compiled_forward_differentiated_eagerly():
    from tracegrad.nn.parallel import DistributedDataParallel as DDP
    tg.manual_seed(0)
    base = tg.nn.Linear(4, 2)

    def rank_main(rank, m):
        model = DDP(m)
        forward = tg.compile(lambda x: model(x).pow(2).mean())
        forward(tg.ones(3, 4) * (rank + 1)).backward()
        return m.weight.grad.numpy()

    grads = tg.distributed.run_local(rank_main, 2, [(copy.deepcopy(base),) for _ in range(2)])
    want = []
    for r in range(2):
        m = copy.deepcopy(base)
        m(tg.ones(3, 4) * (r + 1)).pow(2).mean().backward()
        want.append(m.weight.grad.numpy())
    for g in grads:
        np.testing.assert_allclose(g, (want[0] + want[1]) / 2, rtol=1e-6)
