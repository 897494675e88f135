"""Every op in the op table: eager vs PyTorch, compiled (the default backend: the fused loops on the CPU)
vs eager, the VJP against float64 finite differences (<J u, v> == <u, J^T v>), and gradients vs PyTorch.

Repro a failure with: python -m pytest tests/test_ops.py -k <op id>
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ir import types
from op_table import CASES, FORWARD_ONLY, torch

ALL = CASES + FORWARD_ONLY


def _attrs(case):
    return {k: types.dtype(v) if k == "dtype" else v for k, v in case.attrs.items()}


def _run(case, arrays, requires_grad=False):
    ts = [tg.tensor(a, requires_grad=requires_grad and i in case.diff) for i, a in enumerate(arrays)]
    out = getattr(tg.ops, case.op)(*ts, **_attrs(case))
    outs = out if isinstance(out, tuple) else (out,)
    return ts, [outs[i] for i in case.outputs]


def _sample(case, seed=0):
    return case.make(np.random.default_rng(seed))


def _torch_inputs(case, arrays, requires_grad=False):
    return [torch.tensor(a, requires_grad=requires_grad and i in case.diff) for i, a in enumerate(arrays)]


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_eager_matches_pytorch(case):
    if torch is None or case.ref is None:
        pytest.skip("no PyTorch reference")
    arrays = _sample(case)
    _, (out,) = _run(case, arrays)
    ref = case.ref(*_torch_inputs(case, arrays))
    np.testing.assert_allclose(out.numpy().astype(np.float64), ref.detach().numpy().astype(np.float64),
                               rtol=1e-6, atol=1e-9, err_msg=case.id)


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_compiled_matches_eager(case):
    arrays = [a.astype(np.float32) if a.dtype == np.float64 else a for a in _sample(case, 1)]
    _, eager = _run(case, arrays)

    @tg.compile
    def step(*xs):
        out = getattr(tg.ops, case.op)(*xs, **_attrs(case))
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(outs[i] for i in case.outputs)

    compiled = step(*[tg.tensor(a) for a in arrays])
    for e, c in zip(eager, compiled):
        assert e.dtype == c.dtype and e.shape == c.shape
        np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=1e-5, atol=1e-6, err_msg=case.id)


def _vjp(case, arrays, v):
    ts, (out,) = _run(case, arrays, requires_grad=True)
    grads = tg.autograd.grad([out], [ts[i] for i in case.diff], [tg.tensor(v)])
    return [g.numpy() if g is not None else np.zeros_like(arrays[i]) for g, i in zip(grads, case.diff)]


@pytest.mark.parametrize("case", [c for c in CASES if c.fd], ids=lambda c: c.id)
def test_vjp_matches_finite_differences(case):
    """<J u, v> == <u, J^T v>: directional derivative by central differences in float64."""
    r = np.random.default_rng(2)
    arrays = _sample(case, 2)
    _, (out,) = _run(case, arrays)
    v = r.standard_normal(out.shape)
    us = {i: r.standard_normal(arrays[i].shape) for i in case.diff}
    eps = 1e-6

    def f(sign):
        moved = [a + sign * eps * us[i] if i in us else a for i, a in enumerate(arrays)]
        return _run(case, moved)[1][0].numpy().astype(np.float64)

    jvp = (f(+1) - f(-1)) / (2 * eps)
    lhs = float(np.sum(jvp * v))
    rhs = float(sum(np.sum(us[i] * g) for i, g in zip(case.diff, _vjp(case, arrays, v))))
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-7), case.id


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradients_match_pytorch(case):
    if torch is None or case.ref is None:
        pytest.skip("no PyTorch reference")
    arrays = _sample(case, 3)
    tin = _torch_inputs(case, arrays, requires_grad=True)
    ref = case.ref(*tin)
    v = np.random.default_rng(4).standard_normal(tuple(ref.shape))
    ref.backward(torch.tensor(v))
    ours = _vjp(case, arrays, v)
    for g, i in zip(ours, case.diff):
        np.testing.assert_allclose(g, tin[i].grad.numpy(), rtol=1e-6, atol=1e-9, err_msg=f"{case.id} input {i}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_ops_round_once(dtype):
    """Half inputs compute in fp32 and round the result once, like the GPU kernels and PyTorch."""
    x = np.random.default_rng(0).uniform(-2, 2, (4, 8)).astype(np.float32)
    t = tg.tensor(x).to(getattr(tg, dtype))
    out = (t.exp() * t).sum(-1).float().numpy()
    want = torch.tensor(x).to(getattr(torch, dtype))
    want = (want.exp() * want).sum(-1).float().numpy()
    np.testing.assert_allclose(out, want, rtol=2e-2)


def test_random_ops_agree_between_eager_and_compiled():
    tg.manual_seed(7)
    eager = (tg.rand(3, 4), tg.randn(5))
    tg.manual_seed(7)
    step = tg.compile(lambda: (tg.rand(3, 4), tg.randn(5)))
    compiled = step()
    for e, c in zip(eager, compiled):
        np.testing.assert_array_equal(e.numpy(), c.numpy())
    again = step()   # the state advanced: new numbers
    assert not np.array_equal(again[0].numpy(), compiled[0].numpy())


@pytest.mark.parametrize("seed, offset", [(0, 0), (7, 3), (2 ** 40 + 5, 2 ** 33 - 17)])
def test_cpu_draws_equal_the_counter_hash_written_in_numpy(seed, offset):
    """The CPU's one-pass draws compute `rng`'s formula: uniforms bit for bit (integer hash, exact
    scaling); normals to float32 rounding (LLVM's log and cos against numpy's), offsets past 2^32."""
    from tracegrad.runtime import rng, rng_cpu
    np.testing.assert_array_equal(rng_cpu.uniform(seed, offset, 4099), rng.uniform(seed, offset, 4099))
    np.testing.assert_allclose(rng_cpu.normal(seed, offset, 4099), rng.normal(seed, offset, 4099),
                               rtol=1e-5, atol=1e-6)
    off_main = []         # another thread (a rank of run_local) draws the same numbers
    t = threading.Thread(target=lambda: off_main.append((rng_cpu.uniform(seed, offset, 999),
                                                         rng_cpu.normal(seed, offset, 999))))
    t.start()
    t.join()
    np.testing.assert_array_equal(off_main[0][0], rng_cpu.uniform(seed, offset, 999))
    np.testing.assert_array_equal(off_main[0][1], rng_cpu.normal(seed, offset, 999))
