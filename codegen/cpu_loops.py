"""Rewrites of a written loop nest (lines of numba source) into the order that vectorizes.

The loop writer (`cpu_codegen.LoopWriter`) walks x one element (pointwise) or one row (reduction)
at a time, with indices in terms of `xindex` and `rindex`. Two shapes of index keep that order
scalar; here they are found on the source text, and a reduction's loops are rewritten:

    row_tile       a pointwise loop reading at `xindex % D` or `xindex // D`: rows xo, columns xi
    interchange    a reduction over a leading axis (`D * rindex`): blocks of columns, rindex outside
                   the columns, one accumulator a column
"""
from __future__ import annotations

import re

_INNER = re.compile(r"\(xindex % (\d+)\)")
_OUTER = re.compile(r"\(xindex // (\d+)\)")


def row_tile(lines: list[str], xnumel: int) -> int | None:
    """D for a pointwise loop that reads at `xindex % D` (a broadcast along the last D elements, as
    a bias) or `xindex // D` (a value per row, as softmax's max), else None. The loop is then
    written again over rows xo and columns xi (`KernelPlan.tile`), its indices simplified in terms
    of the two. The modulo per element kept numba's loop scalar: a fused bias + GELU took 4.9 ms
    on [1024, 512] with it, 1.6 ms without; and what depends on the row alone is computed once a row."""
    found = [int(d) for line in lines for d in _INNER.findall(line) + _OUTER.findall(line)]
    ds = [d for d in found if 1 < d < xnumel and xnumel % d == 0]
    return max(set(ds), key=ds.count) if ds else None


_ROW_STEP = re.compile(r"\b(\d+) \* rindex\b")
_ACC_INIT = re.compile(r"^(acc\d+(?:_i)?) = np\.(\w+)\(")


def interchange(lines: list[str], level: int, xnumel: int):
    """(D, accumulators, lines) for a reduction over a leading axis, or None. When the loads step
    D elements a row (`D * rindex`) and x walks D contiguous columns (`xindex % D`), a loop over x
    with `for rindex` inside reads with a stride of D and stays scalar: a fused GELU backward with
    its bias gradient, [16, 64, 512] summed over 64, took 10 ms so. Here each `for rindex` runs
    over a block of D columns instead (`for xo`, then `for rindex`, then `for xi` over contiguous
    memory), with one accumulator per column (`accN[xi]`, arrays of D made before the loop). The
    values of x computed between the loops are pure, so each inner loop recomputes those it
    follows rather than keeping arrays of them; stores between loops get a `for xi` of their own."""
    found = set(int(d) for line in lines for d in _INNER.findall(line))
    steps = set(int(d) for line in lines for d in _ROW_STEP.findall(line))
    ds = [d for d in found & steps if 8 <= d < xnumel and xnumel % d == 0]
    if len(ds) == 1:
        d = ds[0]
    elif not found and xnumel in steps and not any("xindex //" in line for line in lines):
        # x is the column itself ([rows, C] summed over rows): blocks of columns, two or more
        d = next((b for b in (256, 128, 64, 32, 16, 8) if xnumel % b == 0 and xnumel // b >= 2), None)
        if d is None:
            return None
    else:
        return None
    ind = "    " * (level + 1)
    accs, segments, i = [], [], 0
    while i < len(lines):
        line = lines[i][len(ind):]
        i += 1
        if line.startswith("for rindex"):
            body = []
            while i < len(lines) and lines[i].startswith(ind + "    "):
                body.append(lines[i][len(ind) + 4:])
                i += 1
            segments.append((line, body))
            continue
        m = _ACC_INIT.match(line)
        if m:
            accs.append((m.group(1), m.group(2)))
        elif not re.match(r"^(tmp\d+ = |\w+\[)", line):
            return None           # NOTE: only assignments and stores are moved between loops
        segments.append((None, [line]))
    names = re.compile(r"\b(" + "|".join(a for a, _ in accs) + r")\b") if accs else None
    at_xi = (lambda t: names.sub(r"\1[xi]", t)) if names else (lambda t: t)
    pure = lambda t: t.startswith("tmp")        # noqa: E731
    out, done = [], []          # done: the x values assigned so far, recomputed where read
    p1, p2, p3 = (ind + "    " * k for k in range(3))

    def columns(prefix: str, body: list[str]) -> None:
        out.append(f"{prefix}for xi in range({d}):")
        out.append(f"{prefix}    xindex = xo * {d} + xi")
        out.extend(prefix + "    " + at_xi(t) for t in done + body)
    for head, body in segments:
        if head is None:
            if pure(body[0]):
                done.append(body[0])
            else:
                columns(p1, body)
        else:
            out.append(p1 + head)
            columns(p2, body)
    out = [t.replace(f"(xindex % {d})", "xi").replace(f"(xindex // {d})", "xo") for t in out]
    return d, accs, out
