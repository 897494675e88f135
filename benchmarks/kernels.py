"""Benchmark tracegrad's compiled kernels against PyTorch eager and torch.compile (GPU).

    python benchmarks/kernels.py                        # everything
    python benchmarks/kernels.py --only softmax --only ce

Each row compiles a small function with `tg.compile` on CUDA tensors, so what runs is what a
training step gets: fused Triton kernels generated from the IR (softmax, layer norm, RMS norm,
the cross-entropy decomposition) or the template the compiler keeps for a composite (flash
attention, fused cross-entropy). Shapes are GPT-2's: norms and softmax over [16384, 8192] rows,
cross-entropy over bf16 logits [16384, 50304], causal bf16 attention at B16 H12 T1024 d64.

Every row is checked against PyTorch before it is timed. Times are medians of
triton.testing.do_bench (the compiled program is called directly, without tracegrad's per-call
Python dispatch); TB/s counts the bytes each op must move once (inputs read, outputs written);
peak MB is what a call allocates on top of its inputs (CuPy allocates through torch's caching
allocator here, so torch.cuda.max_memory_allocated counts both).
"""
from __future__ import annotations

import argparse
import time

import cupy
import numpy as np
import torch
import torch.nn.functional as TF
import triton
import triton.testing

import tracegrad as tg
import tracegrad.nn.functional as F
from tracegrad.codegen import triton_codegen
from tracegrad.runtime.devices import BF16, TypedArray
from timing import measure, torch_alloc
from tracegrad.ir.types import TensorType, dtype as tg_dtype

TARGETS = "norms/softmax >= 0.95x torch.compile; cross-entropy faster than torch.compile at <= 1/2 its peak " \
          "memory; attention >= 0.7x SDPA forward and backward"


# -- moving data between torch and tracegrad without copies -----------------------------------------
def to_cupy(t: torch.Tensor):
    if t.dtype == torch.bfloat16:
        return TypedArray(cupy.from_dlpack(t.detach().view(torch.int16)).view(cupy.uint16), BF16)
    return cupy.from_dlpack(t.detach())


def to_torch(x) -> torch.Tensor:
    if isinstance(x, TypedArray):
        return torch.from_dlpack(x.array.view(cupy.int16)).view(torch.bfloat16)
    return torch.from_dlpack(x)


def to_tg(t: torch.Tensor, requires_grad: bool = False) -> tg.Tensor:
    """A tracegrad CUDA tensor on the same memory as a torch one."""
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.int64: "int64"}[t.dtype]
    out = tg.Tensor._from_array(to_cupy(t), TensorType(tuple(t.shape), tg_dtype(name), f"cuda:{t.device.index or 0}"))
    return out.requires_grad_() if requires_grad else out


def compiled(fn, *tensors, donate=()):
    """Compile `fn` for these tensors; return (a zero-argument call of the generated program, outputs,
    the compiled function). The call skips tracegrad's dispatch so that only kernels are timed
    (a donated buffer is written over on every call)."""
    step = tg.compile(fn, donate=donate)
    buffers = [t._data for t in tensors]
    t0 = time.perf_counter()
    outs = step(*tensors)
    compile_s = time.perf_counter() - t0
    entry = step.entries[-1]
    ins = []
    for kind, obj in entry.sources:
        ins.append(buffers[obj] if kind == "arg" else obj._data if kind == "data" else obj._grad._data)
    program = entry.program
    print(f"  compiled {fn.__name__}: {entry.stages['fused'].meta['summary']}, {compile_s:.1f} s "
          f"(first call, including Triton's compile)")
    return (lambda: program(*ins)), outs, step


def check(name, ours, ref, tol):
    ours = to_torch(ours._data if isinstance(ours, tg.Tensor) else ours).float()
    ref = ref.float()
    err = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    assert err < tol, f"{name}: max error {err:.2e} relative to max |torch| (tolerance {tol})"


ROWS: list[dict] = []


def row(op, impl, ms, peak, work, unit):
    ROWS.append(dict(op=op, impl=impl, ms=ms, peak=peak, rate=work / ms / 1e9, unit=unit))


def _torch_rows(op, eager, args, work, unit, grad_to_none=None):
    for impl, fn in (("torch eager", eager), ("torch.compile", torch.compile(eager))):
        row(op, impl, *measure(lambda: fn(*args), grad_to_none), work, unit)


# -- rows ------------------------------------------------------------------------------------------
def bench_softmax(N=16384, V=8192):
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        x = torch.randn(N, V, device="cuda", dtype=dtype)
        op = f"softmax {N}x{V} {str(dtype)[6:]}"
        call, out, _ = compiled(lambda x: x.softmax(-1), to_tg(x))
        check(op, out, torch.softmax(x, -1), tol)
        nbytes = 2 * x.numel() * x.element_size()
        _torch_rows(op, lambda x: torch.softmax(x, -1), (x,), nbytes, "TB/s")
        row(op, "tracegrad", *measure(call), nbytes, "TB/s")


def bench_norms(N=16384, C=8192):
    x = torch.randn(N, C, device="cuda")
    w, b = torch.randn(C, device="cuda"), torch.randn(C, device="cuda")
    nbytes = 2 * x.numel() * x.element_size()
    op = f"layer norm {N}x{C} float32"

    def layer_norm(x, w, b):
        return F.layer_norm(x, (C,), w, b)
    call, out, _ = compiled(layer_norm, to_tg(x), to_tg(w), to_tg(b))
    ln = lambda x, w, b: TF.layer_norm(x, (C,), w, b)
    check(op, out, ln(x, w, b), 1e-4)
    _torch_rows(op, ln, (x, w, b), nbytes, "TB/s")
    row(op, "tracegrad", *measure(call), nbytes, "TB/s")

    op = f"RMS norm {N}x{C} float32"

    def rms_norm(x, w):
        return F.rms_norm(x, (C,), w, eps=1e-6)
    call, out, _ = compiled(rms_norm, to_tg(x), to_tg(w))
    rms = lambda x, w: TF.rms_norm(x, (C,), w, eps=1e-6)
    check(op, out, rms(x, w), 1e-4)
    _torch_rows(op, rms, (x, w), nbytes, "TB/s")
    row(op, "tracegrad", *measure(call), nbytes, "TB/s")


def bench_cross_entropy(N=16384, V=50304):
    x = torch.randn(N, V, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, V, (N,), device="cuda")
    t[::97] = -100
    op = f"cross-entropy fwd+bwd {N}x{V} bf16"
    ref = TF.cross_entropy(x.float(), t, ignore_index=-100)
    ref.backward()
    ref_grad, x.grad = x.grad, None
    nbytes = 3 * N * V * x.element_size()      # read the logits twice, write their gradient once

    def ce(x, t):
        loss = F.cross_entropy(x, t, ignore_index=-100)
        loss.backward()
        return loss, x.grad
    eager = lambda x, t: TF.cross_entropy(x, t, ignore_index=-100).backward()
    _torch_rows(op, eager, (x, t), nbytes, "TB/s", [x])
    # "fused IR": the decomposition, fused by the compiler; "donated": tg.compile(ce, donate="x"), so
    # dlogits may be written over the logits (a copy of them: the call overwrites its input)
    for impl, templates, donate in (("tracegrad (template)", triton_codegen.TEMPLATES, ()),
                                    ("tracegrad (fused IR)", frozenset(), ()),
                                    ("tracegrad (template, donated)", triton_codegen.TEMPLATES, "x")):
        keep = triton_codegen.TEMPLATES
        triton_codegen.TEMPLATES = templates
        try:
            logits = to_tg(x.detach().clone() if donate else x.detach(), requires_grad=True)
            call, (loss, grad), _ = compiled(ce, logits, to_tg(t), donate=donate)
        finally:
            triton_codegen.TEMPLATES = keep
        check(f"{op} loss", loss, ref.detach(), 1e-3)
        check(f"{op} dlogits", grad, ref_grad, 2e-2)
        row(op, impl, *measure(call), nbytes, "TB/s")


def bench_cross_entropy_head(N=16384, C=768, V=50304):
    """The LM head as a training step has it: logits made in the step (h @ w) die at the loss's
    backward, so the compiled step may write dlogits over them. Peak MB is the memory to compare."""
    h = (torch.randn(N, C, device="cuda") / C ** 0.5).to(torch.bfloat16).requires_grad_()
    w = torch.randn(C, V, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, V, (N,), device="cuda")
    op = f"LM head h@w + cross-entropy fwd+bwd {N}x{C}x{V} bf16"
    flops = 3 * 2 * N * C * V

    def head(h, w, t):
        loss = TF.cross_entropy(h @ w, t)
        loss.backward()
        return loss
    _torch_rows(op, head, (h, w, t), flops, "TFLOP/s", [h, w])
    h.grad = w.grad = None     # timing left its last gradients there
    ref = head(h, w, t)
    ref_dh, ref_dw = h.grad, w.grad
    h.grad = w.grad = None

    def ce_head(h, w, t):
        loss = F.cross_entropy(h @ w, t)
        loss.backward()
        return loss, h.grad, w.grad
    call, (loss, dh, dw), step = compiled(ce_head, to_tg(h.detach(), True), to_tg(w.detach(), True), to_tg(t))
    assert "inplace=True" in step.ir("kernels"), "dlogits should be written over the dying logits"
    check(f"{op} loss", loss, ref.detach(), 1e-2)
    check(f"{op} dh", dh, ref_dh, 3e-2)
    check(f"{op} dw", dw, ref_dw, 3e-2)
    row(op, "tracegrad", *measure(call), flops, "TFLOP/s")


def bench_attention(B=16, H=12, T=1024, D=64):
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    flops = 4 * B * H * T * T * D / 2      # two matmuls, causal half
    sdpa = lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True)

    def attention(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def attention_train(q, k, v, do):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.backward(do)
        return o, q.grad, k.grad, v.grad
    fwd, out, _ = compiled(attention, *map(to_tg, (q, k, v)))
    check("attention o", out, sdpa(q, k, v), 2e-2)
    both, outs, _ = compiled(attention_train, *[to_tg(a, requires_grad=i < 3) for i, a in enumerate((q, k, v, do))])
    qg, kg, vg = (a.detach().requires_grad_() for a in (q, k, v))
    sdpa(qg, kg, vg).backward(do)
    for name, ours, ref in zip(("dq", "dk", "dv"), outs[1:], (qg.grad, kg.grad, vg.grad)):
        check(f"attention {name}", ours, ref, 2e-2)
    for impl, fn in (("torch eager", sdpa), ("torch.compile", torch.compile(sdpa))):
        row("attention fwd", impl, *measure(lambda: fn(q, k, v)), flops, "TFLOP/s")
        out = fn(qg, kg, vg)
        row("attention bwd", impl, *measure(lambda: out.backward(do, retain_graph=True), [qg, kg, vg]),
            2.5 * flops, "TFLOP/s")
    ms_fwd, peak_fwd = measure(fwd)
    ms_both, peak_both = measure(both)
    row("attention fwd", "tracegrad", ms_fwd, peak_fwd, flops, "TFLOP/s")
    row("attention bwd", "tracegrad", max(ms_both - ms_fwd, 1e-6), peak_both, 2.5 * flops, "TFLOP/s")


def bench_overhead(B=1, H=1, T=128, D=64, calls=2000):
    """Host time per call where the GPU has almost nothing to do: back-to-back calls of a tiny
    causal attention, so each call's Python and launch cost is what is measured. Buffers come from
    CuPy's own pool here, as in a training run."""
    cupy.cuda.set_allocator(cupy.get_default_memory_pool().malloc)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    sdpa = lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True)
    compiled_sdpa = torch.compile(sdpa)
    program, _, step = compiled(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                *map(to_tg, (q, k, v)))
    tq, tk, tv = map(to_tg, (q, k, v))
    print(f"\nhost time per call, causal attention [{B}, {H}, {T}, {D}] bf16, {calls} calls back to back:")
    for impl, fn in (("torch eager", lambda: sdpa(q, k, v)), ("torch.compile", lambda: compiled_sdpa(q, k, v)),
                     ("tracegrad program", program), ("tracegrad step(q, k, v)", lambda: step(tq, tk, tv))):
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        print(f"  {impl:<26} {(time.perf_counter() - t0) / calls * 1e6:7.1f} us")
    cupy.cuda.set_allocator(torch_alloc)


def print_table():
    w_op, w_impl = (max([len(r[k]) for r in ROWS] + [2]) for k in ("op", "impl"))
    print(f"\n{'op':<{w_op}} {'impl':<{w_impl}} {'ms':>8} {'rate':>14} {'peak MB':>9} {'vs eager':>9} {'vs compile':>10}")
    for r in ROWS:
        same = {x["impl"]: x["ms"] for x in ROWS if x["op"] == r["op"]}
        print(f"{r['op']:<{w_op}} {r['impl']:<{w_impl}} {r['ms']:8.3f} {r['rate']:8.2f} {r['unit']:<5} {r['peak']:9.0f} "
              f"{same['torch eager'] / r['ms']:8.2f}x {same['torch.compile'] / r['ms']:9.2f}x")
    print("(ratios: the other's time / this row's time; above 1 means this row is faster; "
          "tracegrad's attention bwd = its fwd+bwd step minus its fwd)")
    print(f"targets: {TARGETS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    choices = ["softmax", "norms", "ce", "ce_head", "attention", "overhead"]
    parser.add_argument("--only", action="append", choices=choices)
    only = parser.parse_args().only or choices
    cupy.cuda.set_allocator(torch_alloc)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"cupy {cupy.__version__}, {time.strftime('%Y-%m-%d')}")
    np.random.seed(0)
    torch.manual_seed(0)
    for name, bench in (("softmax", bench_softmax), ("norms", bench_norms), ("ce", bench_cross_entropy),
                        ("ce_head", bench_cross_entropy_head),
                        ("attention", bench_attention), ("overhead", bench_overhead)):
        if name in only:
            print(name)
            bench()
    print_table()
