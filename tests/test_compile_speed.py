"""What keeps compiling a deep model fast: identical layers share one kernel (one Triton compile
each), and fusion's cycle check stays exact on a topological order kept through its merges.
Speed itself is measured by benchmarks/compile_time.py, not here."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("triton")

import tracegrad as tg  # noqa: E402
import tracegrad.nn as nn  # noqa: E402
from tracegrad.codegen.kernel_source import KernelSource  # noqa: E402
from tracegrad.ir.passes import decompose, simplify  # noqa: E402
from tracegrad.ir.passes.fusion import Fuser  # noqa: E402
from tracegrad.ir.passes.fusion_emit import split_reductions  # noqa: E402
from tracegrad.ir.passes.fusion_order import GroupOrder  # noqa: E402
from tracegrad.runtime import kernel_cache  # noqa: E402
from triton_check import _cache_dir  # noqa: E402,F401  (an autouse fixture)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _mlp_step(layers=3, width=16):
    """A residual MLP of identical layers (norm, linear, GELU, linear) trained by AdamW."""
    tg.manual_seed(0)
    blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                          nn.Linear(2 * width, width)) for _ in range(layers)])
    opt = tg.optim.AdamW(blocks.parameters(), lr=1e-3)

    def step(x):
        h = x
        for blk in blocks:
            h = h + blk(h)
        loss = (h * h).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss
    x = tg.tensor(np.random.default_rng(0).standard_normal((8, width)).astype(np.float32))
    return step, x


def test_kernel_key_ignores_names_and_comments():
    a = KernelSource("k3_poi_fused_add", "@triton.jit\ndef k3_poi_fused_add(in_ptr0):\n"
                     "    # model.py:7  h.0  x + b\n    tmp0 = tl.load(in_ptr0)  # t12\n", [], None, False)
    b = KernelSource("k9_poi_fused_add", "@triton.jit\ndef k9_poi_fused_add(in_ptr0):\n"
                     "    # model.py:7  h.1  x + b\n    tmp0 = tl.load(in_ptr0)  # t40\n", [], None, False)
    c = KernelSource("k9_poi_fused_add", "@triton.jit\ndef k9_poi_fused_add(in_ptr0):\n"
                     "    tmp0 = tl.load(in_ptr0 + 1)  # t40\n", [], None, False)
    assert a.key == b.key != c.key


def test_identical_layers_share_kernels():
    step, x = _mlp_step(layers=3)
    compiled = tg.compile(step, backend="triton")
    want = tg.compile(_mlp_step(layers=3)[0], backend="numpy")(x)
    got = compiled(x)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4)   # float32 kernels vs numpy: rounding only
    kernels = compiled.entries[-1].program.generated.kernels
    keys = {k.key for k in kernels}
    # the middle layer's kernels are those of its neighbours (the first and last layers fuse with what
    # surrounds them, so they differ)
    assert len(keys) <= len(kernels) - 3
    fns = {id(kernel_cache.load(k.source, k.name, k.key)) for k in kernels}
    assert len(fns) == len(keys)         # one @triton.jit function (so one Triton compile) per structure


def test_fusion_keeps_a_topological_order_of_its_groups():
    step, x = _mlp_step(layers=2)
    compiled = tg.compile(step, backend="triton")
    compiled(x)
    g = compiled.graphs()["optimized"]
    f = Fuser(split_reductions(g))
    f.run()
    order, pos = f.topo.order, f.topo.pos
    placed = [gid for gid in order if gid is not None]
    assert sorted(placed) == sorted(f.groups) and all(pos[gid] == order.index(gid) for gid in placed)
    assert all(pos[a] < pos[b] for a, b in f.dag.edges)
    assert len(f.groups) < len(g.nodes) // 4        # it did fuse: each group is several nodes


def test_cycle_check_sees_paths_through_other_groups():
    def step(x):
        a = x.exp()
        s = a.sum(-1, keepdim=True)      # a reduction between a and its reader
        return (a * s).tanh()
    g = tg.compile(step, backend="triton")
    x = tg.tensor(np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32))
    g(x)
    f = Fuser(split_reductions(simplify(decompose(g.graphs()["traced"]))))
    exp = next(i for i, n in enumerate(f.nodes) if n.op == "exp")
    tanh = next(i for i, n in enumerate(f.nodes) if n.op == "tanh")
    red = next(i for i, n in enumerate(f.nodes) if n.op == "sum")
    assert f.cycle_via(exp, tanh) is not None and f.cycle_via(tanh, exp) is not None
    assert f.cycle_via(exp, red) is None


def test_group_order_moves_what_the_earlier_group_reaches_after_the_merge():
    import networkx as nx
    dag = nx.DiGraph([(0, 2), (1, 3), (0, 3)])
    topo = GroupOrder(dag, [0, 1, 2, 3])
    assert topo.cycle_via(0, 3) is None and topo.cycle_via(1, 2) is None
    topo.merge(0, 3)                     # 3 into 0: 1 (which feeds 3) must come first, 2 (fed by 0) after
    dag.remove_node(3)
    dag.add_edge(1, 0)
    assert [g for g in topo.order if g is not None] == [1, 0, 2]
    assert all(topo.pos[a] < topo.pos[b] for a, b in dag.edges)
    dag.add_edges_from([(2, 4), (4, 5), (0, 5)])
    topo = GroupOrder(dag, [1, 0, 2, 4, 5])
    assert topo.cycle_via(0, 5) == 4 and topo.cycle_via(5, 0) == 4     # 0 -> 2 -> 4 -> 5
