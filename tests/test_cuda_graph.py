"""Replaying a step as a CUDA graph (`runtime.cuda_graph.CapturedStep`): which inputs are copied in,
which outputs are copied out, and when the graph is captured again. On the CPU a stand-in platform
"captures" by remembering the function and "replays" by running it on the captured buffers and
writing its results into the captured outputs, as a graph writes fixed addresses; the real capture
is checked on the GPU in tests/test_gpu.py."""
from __future__ import annotations

import numpy as np
import pytest

from tracegrad.runtime.cuda_graph import RECAPTURES, CapturedStep


class FakeGraphs:
    def __init__(self):
        self.launches = 0

    def ptr(self, a):
        return a.__array_interface__["data"][0]

    def nbytes(self, a):
        return a.nbytes

    def empty_like(self, a):
        return np.empty_like(a)

    def copy_into(self, dst, src):
        np.copyto(dst, src)

    def copy(self, a):
        return a.copy()

    def capture(self, fn, arrays):
        """Nothing runs while a stream is captured: a dry run on copies gives the outputs' buffers,
        an output written over an input being that input."""
        copies = [a.copy() for a in arrays]
        dry = fn(*copies)
        outs = [arrays[[id(c) for c in copies].index(id(r))] if any(r is c for c in copies) else np.empty_like(r)
                for r in dry]
        return (fn, arrays, outs), outs

    def launch(self, graph):
        fn, arrays, outs = graph
        for o, r in zip(outs, fn(*arrays)):
            if o is not r:
                np.copyto(o, r)
        self.launches += 1


def sgd(w, x):
    """A step: w -= 0.5 * x (in place, as the optimizer update), and a loss from a fresh buffer."""
    w -= 0.5 * x
    return w, np.array(float((w * w).sum()))


def test_replays_update_state_in_place_and_read_each_new_batch():
    w = np.ones(4)
    step, plain = CapturedStep(sgd, FakeGraphs()), np.ones(4)
    losses = []
    for i in range(5):
        x = np.full(4, float(i))             # a new batch buffer every call
        w_out, loss = step(w, x)
        assert w_out is w                    # the caller's own buffer, updated in place
        plain -= 0.5 * x
        losses.append(loss)
        np.testing.assert_array_equal(w, plain)
        assert float(loss) == float((plain * plain).sum())
    assert step.captures == 1 and step.replays == 4 and step.platform.launches == 4
    assert not step.stable[1] and step.stable[0]
    assert len({id(x) for x in losses}) == 5 and float(losses[1]) != float(losses[4])   # copies, not one buffer


def test_a_moved_weight_is_captured_again_and_then_given_up():
    step = CapturedStep(sgd, FakeGraphs())
    w, x = np.ones(4), np.ones(4)
    for _ in range(3):
        step(w, x)
    assert step.captures == 1
    for k in range(RECAPTURES + 2):
        w = w.copy()                        # the user swapped the weight's buffer
        want = w - 0.5 * x
        step(w, x)
        step(w, x)
        np.testing.assert_array_equal(w, want - 0.5 * x)
    assert not step.active and "moved" in step.reason and step.captures == RECAPTURES


def test_a_step_that_cannot_be_captured_runs_uncaptured():
    class Refuses(FakeGraphs):
        def capture(self, fn, arrays):
            raise RuntimeError("operation not permitted when stream is capturing")

    step, w = CapturedStep(sgd, Refuses()), np.ones(2)
    for _ in range(3):
        step(w, np.ones(2))
    np.testing.assert_array_equal(w, np.ones(2) - 1.5)
    assert "capture failed" in step.reason and "CUDA graph: not used" in step.describe()


def _train(device, steps, graphs, monkeypatch, backend="auto"):
    import tracegrad as tg
    from tracegrad.models.gpt import GPT, GPTConfig
    monkeypatch.setenv("TRACEGRAD_CUDA_GRAPHS", "1" if graphs else "0")
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.1)).to(device)
    opt = tg.optim.AdamW(model.parameters(), lr=1e-2)

    @tg.compile(backend=backend)
    def step(x, y):
        with tg.autocast(tg.bfloat16, enabled=device != "cpu"):
            _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        return loss
    rng = np.random.default_rng(0)
    w = model.transformer.h[0].mlp.c_fc.weight
    buffers, losses = set(), []
    for _ in range(steps):
        x, y = (tg.tensor(rng.integers(0, 96, (2, 32))).to(device) for _ in range(2))   # a new batch each call
        losses.append(step(x, y).item())
        buffers.add(id(w._data))
    return losses, w.numpy(), buffers, step


def test_the_optimizer_updates_state_in_place_on_the_triton_backend(monkeypatch):
    """Parameters and Adam's moments keep their buffers across steps (the update kernels store over
    them, as PyTorch's optimizers do), and the values equal the numpy backend's."""
    losses, w, buffers, step = _train("cpu", 2, False, monkeypatch, backend="triton")
    want_losses, want_w, want_buffers, _ = _train("cpu", 2, False, monkeypatch, backend="numpy")
    assert len(buffers) == 1 and len(want_buffers) == 2
    # every tensor the step replaces: the parameters, their moments and their step counts (a count is
    # read by its increment and by the update recomputing it: the increment must come last); not the
    # dropout's RNG state, which a reduction kernel (the residual's layer norm) stores
    g = step.graphs()["fused"]
    replaced = {g.inputs[j].name for j in g.meta["updates"].values()}
    written = {line.split("=")[1].split("#")[0].strip() for line in step.ir("kernels").splitlines()
               if line.endswith("# updated in place")}
    assert written == replaced - {"rng"} and len(written) == 4 * 28, sorted(replaced - written)
    # NOTE: Triton's interpreter and numpy sum in different orders: float32 rounding, not equality;
    # Adam divides by sqrt(v), so a near-zero gradient's rounding can move its weight by up to lr
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    np.testing.assert_allclose(w, want_w, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_a_training_step_replayed_as_a_cuda_graph_equals_the_uncaptured_one(monkeypatch):
    """Dropout draws new numbers each replay (the RNG state is an input updated by the step), each
    call's new batch is read, and the weights stay in their buffers."""
    want, want_w, _, plain = _train("cuda", 5, False, monkeypatch)
    got, got_w, buffers, step = _train("cuda", 5, True, monkeypatch)
    prog = step.entries[-1].program
    assert plain.entries[-1].program.graphed is None
    assert prog.graphed.replays == 4 and prog.graphed.captures == 1, prog.graphed.describe()
    assert len(buffers) == 1 and len(set(got)) == 5
    # NOTE: the same kernels on the same buffers; cuBLAS may pick another algorithm under capture
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-4, atol=1e-6)
    assert "replayed 4x" in step.explain()


@pytest.mark.gpu
def test_graphs_of_several_steps_share_one_pool_and_keep_their_results(monkeypatch):
    """Two steps interleaved, each replaying over scratch the other also uses: every result is read
    out before the other graph runs, so each call still returns its own values."""
    import tracegrad as tg
    monkeypatch.setenv("TRACEGRAD_CUDA_GRAPHS", "1")
    f = tg.compile(lambda x: ((x * 2).exp() + 1).sum(-1))
    g = tg.compile(lambda x: ((x - 1).tanh() * 3).sum(0))
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.standard_normal((64, 33)).astype(np.float32), rng.standard_normal((48, 64)).astype(np.float32)
        fa, gb = f(tg.tensor(a).to("cuda")), g(tg.tensor(b).to("cuda"))
        np.testing.assert_allclose(fa.numpy(), (np.exp(a * 2) + 1).sum(-1), rtol=1e-5)
        np.testing.assert_allclose(gb.numpy(), (np.tanh(b - 1) * 3).sum(0), rtol=1e-5, atol=1e-5)
    pf, pg = (s.entries[-1].program.graphed for s in (f, g))
    assert pf.replays == pg.replays == 4 and pf.platform.pool is pg.platform.pool


def test_a_view_of_an_input_with_another_shape_is_copied_out():
    def step(w, x):
        w += x
        return w.reshape(2, 2), w.sum()
    step_g, w = CapturedStep(step, FakeGraphs()), np.zeros(4)
    for i in range(4):
        flat, _ = step_g(w, np.ones(4))
        assert flat.shape == (2, 2) and float(flat[0, 0]) == i + 1
    assert step_g.replays == 2


def test_a_launch_out_of_memory_frees_the_default_pools_cache_and_launches_again():
    """A graph launch needs some device memory of its own; when the default pool's cache holds the
    rest, the launch frees that cache and tries once more. Other launch errors pass through."""
    import types

    from tracegrad.runtime.cuda_graph import CupyGraphs

    class CUDARuntimeError(RuntimeError):
        pass
    events = []
    pool = types.SimpleNamespace(free_all_blocks=lambda: events.append("free"))
    cupy = types.SimpleNamespace(get_default_memory_pool=lambda: pool, cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError), get_current_stream=lambda: "stream"))

    class Graph:
        def __init__(self, failures):
            self.failures = failures

        def launch(self, stream):
            events.append(("launch", stream))
            if self.failures:
                self.failures.pop(0)()

    def oom():
        raise CUDARuntimeError("cudaErrorMemoryAllocation: out of memory")
    g = object.__new__(CupyGraphs)
    g.cupy = cupy
    g.launch(Graph([oom]))
    assert events == [("launch", "stream"), "free", ("launch", "stream")]

    def other():
        raise CUDARuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
    with pytest.raises(CUDARuntimeError, match="illegal"):
        g.launch(Graph([other]))
