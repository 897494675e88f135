"""Compiled Triton steps check their indices inside the kernels (runtime/index_flags.py): a bad
embedding index, gather/index_select index, cross-entropy target or scatter index sets a flag and
is read as 0, never out of bounds, and the host raises an IndexError naming the op, the value,
the valid range and the user's line: at once on the CPU (the interpreter, numpy flags), lazily on
a GPU (when the user next reads a value, or every TRACEGRAD_INDEX_CHECK_EVERY calls), never with
a host sync per step.

The indices here are computed inside the step (`i + 0` survives as an add only when it is not
folded; `i + k` with k a tensor does), so no host-side check of the step's inputs sees them: only
the kernels can. The same tests run on CUDA (marker `gpu`)."""
from __future__ import annotations

import os
import sys

import re

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.nn.functional as F

pytest.importorskip("triton")
sys.path.insert(0, os.path.dirname(__file__))
from triton_check import _cache_dir  # noqa: E402,F401  (an autouse fixture: a private kernel cache)
from tracegrad.runtime import index_flags

HERE = re.escape(__file__.rsplit("/", 1)[-1])

# name -> (step(i, k) indexing with i + k, good i, bad i, what the error says)
CASES = {
    "embedding": (lambda i, k: F.embedding(i + k, tg.ones(4, 2, device=k.device)),
                  [0, 3], [0, 4], r"embedding: index 4 is out of range \[0, 4\)"),
    "embedding (negative)": (lambda i, k: F.embedding(i + k, tg.ones(4, 2, device=k.device)),
                             [1, 2], [-1, 2], r"embedding: index -1 is out of range \[0, 4\)"),
    "gather": (lambda i, k: tg.ones(2, 3, device=k.device).gather(1, (i + k).reshape(2, 1)),
               [0, 2], [0, 7], r"gather: index 7 is out of range \[0, 3\)"),
    "index_select": (lambda i, k: tg.ones(2, 3, device=k.device).index_select(1, i + k),
                     [2, 0], [3, 0], r"take: index 3 is out of range \[0, 3\)"),
    "cross_entropy": (lambda i, k: F.cross_entropy(tg.ones(2, 3, device=k.device), i + k),
                      [0, -100], [0, 5], r"cross_entropy: target 5 is out of range \[0, 3\); -100"),
    "cross_entropy (negative)": (lambda i, k: F.cross_entropy(tg.ones(2, 3, device=k.device), i + k),
                                 [2, 1], [-3, 1], r"cross_entropy: target -3 is out of range"),
    "scatter_add": (lambda i, k: tg.zeros(2, 3, device=k.device).scatter_add(1, (i + k).reshape(2, 1),
                                                                             tg.ones(2, 1, device=k.device)),
                    [0, 2], [0, 3], r"scatter_add: index 3 is out of range \[0, 3\)"),
    "index_add": (lambda i, k: tg.zeros(3, 2, device=k.device).index_add(0, i + k, tg.ones(2, 2, device=k.device)),
                  [0, 2], [-1, 2], r"index_add: index -1 is out of range \[0, 3\)"),
}


def _run(name, device, lazy=False):
    fn, good, bad, msg = CASES[name]
    step = tg.compile(fn, backend="triton")
    k = tg.zeros((), dtype=tg.long, device=device)
    ok = step(tg.tensor(good, device=device), k)
    ok.numpy()
    flags = step.entries[-1].program.flags
    assert flags.sites, "the step has no index check"
    flags.lazy = lazy or flags.lazy
    return step, k, bad, good, msg


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_flag_a_bad_index_and_the_step_names_it(name):
    step, k, bad, good, msg = _run(name, "cpu")
    with pytest.raises(IndexError, match=rf"(?s){msg}.*\n  at .*{HERE}:\d+"):
        step(tg.tensor(bad), k)
    step(tg.tensor(good), k).numpy()         # the flag was cleared with the error


@pytest.mark.parametrize("name", ["embedding", "cross_entropy", "gather"])
def test_lazily_checked_steps_raise_at_the_next_read(name, monkeypatch):
    """The GPU's policy, run on the interpreter: calls do not read the flags; the next value read does."""
    monkeypatch.setenv("TRACEGRAD_INDEX_CHECK_EVERY", "0")
    step, k, bad, good, msg = _run(name, "cpu", lazy=True)
    out = step(tg.tensor(bad), k)            # no error yet: nothing was read
    step(tg.tensor(good), k)                 # the next call is no sync point either
    with pytest.raises(IndexError, match=rf"(?s){msg}.*{HERE}"):
        print(out)
    assert step(tg.tensor(good), k).numpy() is not None


def test_lazily_checked_steps_read_their_flags_every_n_calls(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_INDEX_CHECK_EVERY", "3")
    step, k, bad, good, msg = _run("embedding", "cpu", lazy=True)
    step(tg.tensor(bad), k)
    step(tg.tensor(good), k)
    with pytest.raises(IndexError, match=msg):      # the third lazy call reads the flags
        step(tg.tensor(good), k)


def test_the_check_is_in_the_kernel_and_costs_no_host_read():
    step, k, *_ = _run("embedding", "cpu")
    src = step.ir("kernels")
    assert "chk_ptr" in src and "tl.where(" in src          # flagged, then read at 0
    host = [ln for ln in src.split("@triton.jit")[0].splitlines() if not ln.strip().startswith("#")]
    assert not [ln for ln in host if "check" in ln or "numpy" in ln or ".get(" in ln], host


def test_cross_entropy_template_flags_a_bad_target_and_reads_in_bounds():
    from tracegrad.runtime.templates.cross_entropy import cross_entropy_forward
    x = np.zeros((3, 5), np.float32)
    chk = np.zeros(2, np.int64)
    loss, _ = cross_entropy_forward(x, np.array([1, 9, -100]), chk=chk)
    assert chk.tolist() == [1, 9]
    assert np.isfinite(loss).all() and loss[2] == 0
    chk[:] = 0
    cross_entropy_forward(x, np.array([1, 4, -100]), chk=chk)
    assert chk.tolist() == [0, 0]


def test_training_step_with_a_bad_token_names_the_embedding():
    tg.manual_seed(0)
    emb, head = tg.nn.Embedding(5, 4), tg.nn.Linear(4, 5)
    opt = tg.optim.SGD(list(emb.parameters()) + list(head.parameters()), lr=0.1)

    @tg.compile(backend="triton")
    def step(x, y, k):
        loss = F.cross_entropy(head(emb(x + k)), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    k = tg.zeros((), dtype=tg.long)
    y = tg.tensor([1, 2, 3])
    assert np.isfinite(step(tg.tensor([0, 1, 4]), y, k).item())
    with pytest.raises(IndexError, match=rf"(?s)embedding: index 5 is out of range \[0, 5\).*{HERE}"):
        step(tg.tensor([0, 5, 4]), y, k)
    with pytest.raises(IndexError, match=rf"(?s)cross_entropy: target 7 is out of range.*{HERE}"):
        step(tg.tensor([0, 1, 4]), tg.tensor([1, 7, 3]), k)


# -- on a GPU: the same checks, read lazily ------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_steps_raise_at_the_next_read(name, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_INDEX_CHECK_EVERY", "0")
    step, k, bad, good, msg = _run(name, "cuda")
    assert step.entries[-1].program.flags.lazy
    out = step(tg.tensor(bad, device="cuda"), k)      # the call does not sync, so it cannot raise
    assert index_flags._PENDING
    with pytest.raises(IndexError, match=rf"(?s){msg}.*\n  at .*{HERE}:\d+"):
        out.numpy()
    assert not index_flags._PENDING
    step(tg.tensor(good, device="cuda"), k).numpy()   # cleared: a good call reads fine


@pytest.mark.gpu
def test_gpu_steps_read_their_flags_every_n_calls(monkeypatch):
    monkeypatch.setenv("TRACEGRAD_INDEX_CHECK_EVERY", "4")
    step, k, bad, good, msg = _run("embedding", "cuda")
    step(tg.tensor(bad, device="cuda"), k)
    step(tg.tensor(good, device="cuda"), k)
    with pytest.raises(IndexError, match=msg):
        step(tg.tensor(good, device="cuda"), k)


@pytest.mark.gpu
def test_gpu_index_checks_cost_no_sync_per_step():
    """A step with index checks issues no host sync: the host runs ahead of a GPU kept busy."""
    import time

    import cupy
    w = tg.randn(50304, 768, device="cuda")
    step = tg.compile(lambda i: F.embedding(i, w).sum(), backend="triton")
    i = tg.tensor(np.random.default_rng(0).integers(0, 50304, (64, 1024)), device="cuda")
    for _ in range(3):      # NOTE: past the first calls, which compile and capture a CUDA graph (frees sync)
        step(i)
    step(i).numpy()
    busy = cupy.cuda.runtime.deviceSynchronize
    cupy.cuda.runtime.deviceSynchronize()
    a = cupy.ones((8192, 8192), cupy.float32)
    t0 = time.perf_counter()
    for _ in range(20):
        a @ a                                        # ~20 ms of queued GPU work
    for _ in range(20):
        step(i)
    host = time.perf_counter() - t0
    busy()
    total = time.perf_counter() - t0
    assert host < 0.5 * total, (host, total)        # the steps were queued, not waited for


def test_check_kernels_compile_for_sm90():
    """The runtime's own checking kernels (the scatter index check, the NaN scan, the cross-entropy
    template with its target check) compile for an H100/H200: the interpreter lets more through."""
    pytest.importorskip("triton.backends.nvidia")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from tracegrad.runtime.templates import checks, cross_entropy

    kernels = [
        (checks._check_range, {"idx_ptr": "*i64", "safe_ptr": "*i64", "chk_ptr": "*i64", "n": "i32", "lo": "i64",
                               "size": "i64"}, {"BLOCK": 1024}),
        (checks._check_nan, {"x_ptr": "*bf16", "flag_ptr": "*i32", "n": "i32", "k": "i32"}, {"BLOCK": 4096}),
        (cross_entropy._ce_fwd, {"logits": "*bf16", "targets": "*i64", "loss": "*fp32", "lse": "*fp32",
                                 "chk": "*i64", "stride_row": "i64", "V": "i32", "ignore_index": "i64",
                                 "smoothing": "fp32"}, {"BLOCK_V": 1024}),
    ]
    for fn, sig, consts in kernels:
        sig = dict(sig, **{k: "constexpr" for k in consts})
        src = ASTSource(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))


def test_scatter_index_check_flags_and_replaces_bad_indices():
    from tracegrad.runtime.templates.checks import flag_range
    chk = np.zeros(2, np.int64)
    safe = flag_range(np.array([0, 2, 3, -1, 1]), chk, 0, 3)
    assert chk[0] == 1 and chk[1] in (3, -1)
    assert safe.tolist() == [0, 2, 0, 0, 1]
