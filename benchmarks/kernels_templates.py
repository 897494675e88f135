"""Benchmark the kernel templates against PyTorch eager and torch.compile (GPU).

    python benchmarks/kernels_templates.py                 # all three
    python benchmarks/kernels_templates.py --only attention --only ce

Shapes: attention B16 H12 T1024 d64 bf16 causal (forward, backward);
cross-entropy fwd+bwd over bf16 logits [16384, 50304]; the matmul template
with a bias + gelu(tanh) epilogue at GPT-2 MLP shapes (x [16384, 768]).
Every row is checked against torch before it is timed.  Times are medians of
triton.testing.do_bench; peak memory is what the call allocates on top of its
inputs.  CuPy allocates through torch's caching allocator here, so both sides
are counted by torch.cuda.max_memory_allocated.
"""
import argparse
import math

import cupy
import torch
import torch.nn.functional as F
import triton.testing

from tracegrad.runtime.templates.attention import attention_backward, attention_forward
from tracegrad.runtime.templates.cross_entropy import cross_entropy, cross_entropy_backward
from tracegrad.runtime.templates.matmul import matmul
from tracegrad.runtime.devices import BF16, TypedArray
from timing import measure, torch_alloc


def to_cupy(t):
    """A torch CUDA tensor as a CuPy array sharing its memory (bf16: TypedArray)."""
    if t.dtype == torch.bfloat16:
        return TypedArray(cupy.from_dlpack(t.detach().view(torch.int16)).view(cupy.uint16), BF16)
    return cupy.from_dlpack(t.detach())


def to_torch(x):
    if isinstance(x, TypedArray):
        return torch.from_dlpack(x.array.view(cupy.int16)).view(torch.bfloat16)
    return torch.from_dlpack(x)


def check(name, ours, ref, tol=2e-2):
    ours, ref = to_torch(ours).float(), ref.float()
    err = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    assert err < tol, f"{name}: max error {err:.2e} relative to max |torch| (tolerance {tol})"


ROWS = []


def row(op, impl, ms, peak, work, unit):
    ROWS.append(dict(op=op, impl=impl, ms=ms, peak=peak, rate=work / ms / 1e9, unit=unit))


def bench_attention(B=16, H=12, T=1024, D=64):
    q, k, v, do = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    qc, kc, vc, doc = map(to_cupy, (q, k, v, do))
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    compiled = torch.compile(sdpa)
    ref = sdpa(q, k, v)
    ref.backward(do)
    o, lse = attention_forward(qc, kc, vc, causal=True)
    check("attention o", o, ref)
    for name, g, r in zip("qkv", attention_backward(qc, kc, vc, o, lse, doc, causal=True), (q, k, v)):
        check(f"attention d{name}", g, r.grad)
    flops = 4 * B * H * T * T * D / 2  # two matmuls, causal half
    for impl, fwd in (("torch eager (sdpa)", sdpa), ("torch.compile", compiled)):
        row("attention fwd", impl, *measure(lambda: fwd(q, k, v)), flops, "TFLOP/s")
        out = fwd(q, k, v)
        row("attention bwd", impl, *measure(lambda: out.backward(do, retain_graph=True), [q, k, v]),
            2.5 * flops, "TFLOP/s")
    row("attention fwd", "tracegrad template", *measure(lambda: attention_forward(qc, kc, vc, causal=True)),
        flops, "TFLOP/s")
    row("attention bwd", "tracegrad template",
        *measure(lambda: attention_backward(qc, kc, vc, o, lse, doc, causal=True)), 2.5 * flops, "TFLOP/s")


def bench_cross_entropy(N=16384, V=50304):
    x = torch.randn(N, V, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    t = torch.randint(0, V, (N,), device="cuda")
    t[::97] = -100
    xc, tc = to_cupy(x), to_cupy(t)
    ce = lambda x, t: F.cross_entropy(x, t, ignore_index=-100)
    compiled = torch.compile(ce)
    ref = ce(x.float(), t)
    ref.backward()
    loss, lse = cross_entropy(xc, tc)
    check("cross_entropy loss", cupy.asarray(loss).reshape(1), ref.detach().reshape(1), 1e-3)
    check("cross_entropy dlogits", cross_entropy_backward(xc, tc, lse), x.grad)
    x.grad = None
    nbytes = 3 * N * V * x.element_size()  # read logits twice, write dlogits once

    def ours(inplace=False):
        scratch = TypedArray(xc.array.copy(), BF16) if inplace else xc
        def step():
            loss, lse = cross_entropy(scratch, tc)
            return cross_entropy_backward(scratch, tc, lse, inplace=inplace)
        return step

    for impl, fn in (("torch eager", ce), ("torch.compile", compiled)):
        row("cross-entropy fwd+bwd", impl, *measure(lambda: fn(x, t).backward(), [x]), nbytes, "TB/s")
    row("cross-entropy fwd+bwd", "tracegrad template", *measure(ours()), nbytes, "TB/s")
    row("cross-entropy fwd+bwd", "tracegrad in place", *measure(ours(inplace=True)), nbytes, "TB/s")


def bench_matmul(M=16384):
    for K, N in ((768, 3072), (3072, 768)):  # GPT-2 MLP c_fc and c_proj
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(K, N, device="cuda", dtype=torch.bfloat16) / math.sqrt(K)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
        xc, wc, bc = map(to_cupy, (x, w, b))
        eager = lambda x, w, b: F.gelu(torch.addmm(b, x, w), approximate="tanh")
        compiled = torch.compile(eager)
        check("matmul", matmul(xc, wc, bc, "gelu_tanh"), eager(x, w, b))
        op, flops = f"matmul+bias+gelu {M}x{K}x{N}", 2 * M * N * K
        for impl, fn in (("torch eager", eager), ("torch.compile", compiled)):
            row(op, impl, *measure(lambda: fn(x, w, b)), flops, "TFLOP/s")
        row(op, "tracegrad template", *measure(lambda: matmul(xc, wc, bc, "gelu_tanh")), flops, "TFLOP/s")
        check("matmul autotuned", matmul(xc, wc, bc, "gelu_tanh", autotune=True), eager(x, w, b))
        row(op, "tracegrad autotuned",
            *measure(lambda: matmul(xc, wc, bc, "gelu_tanh", autotune=True)), flops, "TFLOP/s")


def print_table():
    print(f"\n{'op':<34} {'impl':<20} {'ms':>8} {'rate':>14} {'peak MB':>9} {'vs eager':>9} {'vs compile':>10}")
    for r in ROWS:
        same = {x["impl"]: x["ms"] for x in ROWS if x["op"] == r["op"]}
        eager = next(ms for impl, ms in same.items() if impl.startswith("torch eager"))
        print(f"{r['op']:<34} {r['impl']:<20} {r['ms']:8.3f} {r['rate']:8.1f} {r['unit']:<5} "
              f"{r['peak']:9.0f} {eager / r['ms']:8.2f}x {same['torch.compile'] / r['ms']:9.2f}x")
    print("(ratios: the other's time / this row's time; above 1 means this row is faster)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=["attention", "ce", "matmul"])
    only = parser.parse_args().only or ["attention", "ce", "matmul"]
    cupy.cuda.set_allocator(torch_alloc)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"cupy {cupy.__version__}")
    for name, bench in (("attention", bench_attention), ("ce", bench_cross_entropy), ("matmul", bench_matmul)):
        if name in only:
            bench()
    print_table()
