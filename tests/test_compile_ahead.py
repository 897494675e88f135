"""Compiling a CUDA step's kernels before its first launch (runtime/compile_ahead.py,
compile_pool.py, compile_worker.py): worker processes compile for a CUDA target with no GPU, the
launching process then loads from Triton's cache, and a dry run of the host function finds every
launch (the templates too) without running anything."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("triton")

import tracegrad as tg  # noqa: E402
from tracegrad.runtime import compile_ahead, compile_pool, kernel_cache  # noqa: E402
from tracegrad.runtime.compile_worker import Pointer, TargetDriver  # noqa: E402
from fake_cupy import fake_cuda  # noqa: E402,F401  (a CuPy stand-in: CUDA buffers on the CPU)

ADD = '''@triton.jit
def k_add(x, y, out, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + i, tl.load(x + i, mask=i < n) + tl.load(y + i, mask=i < n), mask=i < n)
'''


@pytest.fixture
def fresh_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "tg"))
    monkeypatch.setenv("TRACEGRAD_COMPILE_WORKERS", "2")
    kernel_cache.clear_memory()
    yield tmp_path
    compile_pool.stop_all()
    kernel_cache.clear_memory()


def _compiling_here_fails(monkeypatch):
    """From now on, a kernel this process would compile itself raises; one found in Triton's cache loads."""
    import triton
    from triton.backends.nvidia.compiler import CUDABackend

    def refuse(*args, **kwargs):
        raise AssertionError("compiled in the launching process")
    monkeypatch.setattr(CUDABackend, "add_stages", refuse)
    monkeypatch.setattr(triton.runtime.driver, "_active", TargetDriver(90))


def test_workers_compile_for_a_gpu_they_do_not_have_and_this_process_loads_it(fresh_caches, monkeypatch):
    """A generated kernel (loaded from its file) and a template (imported by module) compile in the
    workers for compute capability 9.0; a job a worker cannot import fails alone. Loading both here
    then compiles nothing, and a specialization the workers did not see does compile here."""
    from tracegrad.runtime.templates import checks
    kernel = kernel_cache.load(ADD, "k_add")
    jobs = [compile_pool.job_of(kernel, [Pointer("float32")] * 3 + [1000], dict(BLOCK=256)),
            compile_pool.job_of(checks._check_range, [Pointer("int64")] * 3 + [100, 0, 50], dict(BLOCK=128)),
            dict(module="tracegrad_no_such_module", name="k", path=None, key="k", args=[], meta={})]
    assert jobs[0]["path"] is not None and jobs[1]["path"] is None      # a file, a module
    pool = compile_pool.start(90)
    assert pool.compile(jobs) == 2
    assert pool.stats == dict(pool.stats, compiled=2, failed=1)
    assert pool.compile(jobs[:2]) == 2          # done before, into these caches: not sent again
    assert pool.stats == dict(pool.stats, compiled=2, failed=1)
    _compiling_here_fails(monkeypatch)
    kernel.warmup(Pointer("float32"), Pointer("float32"), Pointer("float32"), 1000, BLOCK=256, grid=(1,))
    checks._check_range.warmup(*[Pointer("int64")] * 3, 100, 0, 50, BLOCK=128, grid=(1,))
    with pytest.raises(AssertionError, match="compiled in the launching process"):
        kernel.warmup(Pointer("float32"), Pointer("float32"), Pointer("float32"), 1024, BLOCK=256, grid=(1,))


def test_a_kernel_defined_in_main_stays_with_its_launch():
    """Workers import kernels by module; one defined in the user's `__main__` cannot be, and a
    buffer argument keeps its dtype and alignment."""
    kernel = kernel_cache.load(ADD, "k_add")

    class Unaligned:
        dtype = np.dtype("float16")

        def data_ptr(self):
            return 1000008
    job = compile_pool.job_of(kernel, [Unaligned(), Pointer("float32"), Pointer("float32"), 7], {"BLOCK": 64})
    assert (job["args"][0].dtype, job["args"][0].aligned, job["args"][3]) == (np.dtype("float16"), False, 7)
    kernel.fn.__module__, module = "__main__", kernel.fn.__module__
    try:
        assert compile_pool.job_of(kernel, [Pointer("float32")] * 3 + [7], {"BLOCK": 64}) is None
    finally:
        kernel.fn.__module__ = module


def test_launches_that_compile_alike_are_compiled_once():
    """Triton specializes an int on being 1, a multiple of 16 and its width, a buffer on its dtype and
    alignment: launches equal in those are one compile, and any difference is another."""
    k = kernel_cache.load(ADD, "k_add")
    f32 = Pointer("float32")
    launches = [(k, [f32, f32, f32, 32], {"BLOCK": 64}), (k, [f32, f32, f32, 48], {"BLOCK": 64}),
                (k, [f32, f32, f32, 40], {"BLOCK": 64}), (k, [f32, f32, f32, 1], {"BLOCK": 64}),
                (k, [f32, f32, f32, 2**40], {"BLOCK": 64}), (k, [f32, f32, Pointer("float32", False), 32],
                                                             {"BLOCK": 64}),
                (k, [f32, f32, f32, 32], {"BLOCK": 128})]
    kept = compile_ahead.distinct(launches)
    assert [launches.index(x) for x in kept] == [0, 2, 3, 4, 5, 6]


def test_a_dry_run_finds_every_launch_of_a_step_and_runs_none(fake_cuda, monkeypatch):
    """The first call of a CUDA training step (attention, cross-entropy, an embedding's scatter,
    AdamW) runs its host function dry first: every generated kernel and template it will launch is
    recorded with its real arguments, and neither the weights nor the optimizer state change."""
    from tracegrad.models.gpt import GPT, GPTConfig
    from tracegrad.runtime import cublas, measured
    monkeypatch.setattr(cublas, "supports", lambda a, b: True)
    monkeypatch.setattr(measured, "recall", lambda *a: None)
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=32)).to("cuda")
    opt = tg.optim.AdamW(model.parameters(), lr=1e-2)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}

    @tg.compile(backend="triton")
    def step(x, y):
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    class Stop(Exception):
        pass
    seen = []

    def precompile(launches, device_id):
        seen.extend(launches)
        raise Stop
    monkeypatch.setattr(compile_ahead, "precompile", precompile)
    x = tg.tensor(np.arange(32).reshape(2, 16) % 64).to("cuda")
    with pytest.raises(Stop):
        step(x, x)
    dry = {k.fn.__name__ for k, args, _ in seen if not any(isinstance(a, Pointer) for a in args)}
    listed = {k.fn.__name__ for k, args, _ in seen if any(isinstance(a, Pointer) for a in args)}
    assert listed and listed <= dry, listed - dry
    assert {"_attn_fwd", "_attn_bwd_dq", "_attn_bwd_dkdv", "_ce_fwd", "_ce_bwd", "_matmul_kernel"} <= dry
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=k)


def test_a_dry_run_makes_unfilled_results_and_stops_at_another_rank():
    """While dry, an op outside the kernels is not run (its inputs hold garbage, an index among them
    could fault the device): its results are buffers of the types its rule infers. A receive from
    another rank ends the dry run."""
    from tracegrad.codegen.eager import run_op as eager
    from tracegrad.runtime.externs import DryRunEnds, Externs

    def run_op(*args, dry=False):
        if not dry:
            raise AssertionError("ran while dry")
        return eager(*args, dry=True)
    rt = Externs("cpu", run_op)
    rt.dry = True
    x, idx, src = np.zeros((5, 3), np.float32), np.array([7, -3]), np.ones((2, 3), np.float32)
    out = rt.index_add(x, idx, src, 0)
    assert out.shape == (5, 3) and out.dtype == np.float32 and out is not x
    (g,) = rt.run("take", [x, idx], axis=0)
    assert g.shape == (2, 3)
    with pytest.raises(DryRunEnds, match="recv"):
        rt.extern("recv", [], shape=(2,), dtype=tg.float32, device="cpu", peer=1, group=(0, 1))
    rt.dry = False
    with pytest.raises(AssertionError, match="ran while dry"):
        rt.run("take", [x, idx], axis=0)
