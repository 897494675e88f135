"""The pieces of a GPT-2 step that the step benchmark points at, each timed alone (GPU):

- column reductions (bias gradients) fused with their elementwise producer, in one stage (the old
  layout: one program per column) and split in two (row chunks along the contiguous axis, then
  the chunks), against torch.compile of the same function;
- every matmul shape of the step (forward, and both products of the backward, in the layouts the
  compiled step hands over: transposed views, no copies), the Triton template against cuBLAS.

    python benchmarks/step_parts.py

Each row is checked against PyTorch first; times are medians of triton.testing.do_bench.
"""
from __future__ import annotations

import sys

import torch
import triton.testing

import tracegrad as tg
from tracegrad.ir.passes import fusion_emit
from tracegrad.runtime import cublas
from tracegrad.runtime.templates import matmul as mm
from kernels import compiled, to_cupy, to_tg, to_torch

N = 16 * 1024


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")


def column_rows():
    print(f"{'column reduction (bf16, fused producer)':<44}{'one stage':>11}{'two stages':>11}{'torch.compile':>14}"
          f"{'GB/s (2 st)':>12}")

    def gelu_bwd_bias(dy, pre):     # what a GELU backward fused with its bias gradient computes
        dh = dy * tg.sigmoid(pre * 1.702)
        return dh, dh.float().sum(0)

    def torch_ref(dy, pre):
        dh = dy * torch.sigmoid(pre * 1.702)
        return dh, dh.float().sum(0)
    for C in (3072, 2304, 768):
        dy = torch.randn(N, C, device="cuda", dtype=torch.bfloat16)
        pre = torch.randn(N, C, device="cuda", dtype=torch.bfloat16)
        times = []
        for on in (False, True):
            fusion_emit.COLUMN_SPLIT["on"] = on
            fn = lambda a, b: gelu_bwd_bias(a, b)     # noqa: E731  (a fresh function: a fresh compile)
            fn.__name__ = f"gelu_bwd_bias_{C}_{'split' if on else 'one'}"
            call, outs, _ = compiled(fn, to_tg(dy), to_tg(pre))
            want = torch_ref(dy, pre)
            for o, w in zip(outs, want):
                got = to_torch(o._data).float()
                err = ((got - w.float()).abs().max() / w.float().abs().max()).item()
                assert err < 2e-2, (C, on, err)
            times.append(bench(call))
        fusion_emit.COLUMN_SPLIT["on"] = True
        tc = torch.compile(torch_ref)
        t_ref = bench(lambda: tc(dy, pre))
        gb = (3 * N * C * 2 + 4 * C) / times[1] / 1e6
        print(f"{f'[{N}, {C}] -> [{C}]':<44}{times[0]:>10.3f} {times[1]:>10.3f} {t_ref:>13.3f} {gb:>11.0f}")


def matmul_rows():
    print(f"\n{'matmul (bf16) M x K x N, layout':<44}{'template':>11}{'cuBLAS':>11}{'torch':>9}{'pick':>10}{'TFLOP/s':>9}")
    total = {"template": 0.0, "cublas": 0.0, "best": 0.0}
    for cin, cout, count in ((768, 2304, 12), (768, 768, 12), (768, 3072, 12), (3072, 768, 12), (768, 50304, 1)):
        x = torch.randn(N, cin, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(cout, cin, device="cuda", dtype=torch.bfloat16) / cin ** 0.5
        dy = torch.randn(N, cout, device="cuda", dtype=torch.bfloat16)
        cases = (("fwd x @ w.T", x, w.t()), ("dx = dy @ w", dy, w), ("dw = dy.T @ x", dy.t(), x))
        for name, a, b in cases:
            want = (a.float() @ b.float())
            ca, cb = to_cupy(a), to_cupy(b)
            ts = {}
            for impl, f in (("template", lambda: mm.matmul(ca, cb)), ("cublas", lambda: cublas.gemm(ca, cb))):
                got = to_torch(f()).float()
                err = ((got - want).norm() / want.norm()).item()
                assert err < 1e-2, (name, impl, err)
                ts[impl] = bench(f)
            t_torch = bench(lambda: a @ b)
            best = min(ts, key=ts.get)
            M, K = a.shape
            flops = 2 * M * K * b.shape[1]
            for k in ("template", "cublas"):
                total[k] += count * ts[k]
            total["best"] += count * ts[best]
            label = f"{M}x{K}x{b.shape[1]} {name}"
            print(f"{label:<44}{ts['template']:>10.3f} {ts['cublas']:>10.3f} {t_torch:>8.3f} {best:>9}"
                  f"{flops / ts[best] / 1e9:>9.0f}")
    print(f"one GPT-2 step's matmuls (outside attention): template {total['template']:.2f} ms, cuBLAS "
          f"{total['cublas']:.2f} ms, per-shape pick {total['best']:.2f} ms")


if __name__ == "__main__":
    torch.manual_seed(0)
    what = sys.argv[1:] or ["columns", "matmul"]
    if "matmul" in what:
        matmul_rows()
    if "columns" in what:
        column_rows()
