"""A differential tester of user programs: random straight-line programs written against the public
API (the same source text runs on `tracegrad` and on `torch`), each run

    eager                    values, and gradients by loss.backward()
    compiled, grad inside    @tg.compile step that calls loss.backward() and returns the grads
    compiled, grad outside   y = tg.compile(program)(*xs); loss(y).backward()

on the numpy backend and on Triton (interpreted on the CPU), compared with PyTorch CPU in float64.
A program is a list of `Step(template, operands)`; `source(program)` prints it as Python, which is
what a failure shows (paste it to reproduce).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import tracegrad as tg
import tracegrad.nn.functional as F

# name -> (arity, applies(shapes) -> bool, fn(m, Fm, *xs)); m is tracegrad or torch, Fm its functional
TEMPLATES: dict[str, tuple] = {}


def template(name, arity=1, applies=lambda *s: True):
    def deco(fn):
        TEMPLATES[name] = (arity, applies, fn)
        return fn
    return deco


def _same(a, b):
    return a == b


def _2d(s):
    return len(s) == 2


for _n, _f in {
    "tanh": lambda m, Fm, x: x.tanh(), "sigmoid": lambda m, Fm, x: x.sigmoid(), "relu": lambda m, Fm, x: Fm.relu(x),
    "gelu": lambda m, Fm, x: Fm.gelu(x), "gelu_tanh": lambda m, Fm, x: Fm.gelu(x, approximate="tanh"),
    "silu": lambda m, Fm, x: Fm.silu(x), "neg": lambda m, Fm, x: -x, "square": lambda m, Fm, x: x * x,
    "exp_tanh": lambda m, Fm, x: x.tanh().exp(), "sin": lambda m, Fm, x: x.sin(), "cos": lambda m, Fm, x: x.cos(),
    "log1p_abs": lambda m, Fm, x: (x.abs() + 1).log(), "sqrt_sq1": lambda m, Fm, x: (x * x + 1).sqrt(),
    "rsqrt_sq1": lambda m, Fm, x: (x * x + 1).rsqrt(), "erf": lambda m, Fm, x: x.erf(),
    "clamp": lambda m, Fm, x: x.clamp(-0.5, 0.7), "scale_shift": lambda m, Fm, x: x * 1.5 - 0.25,
    "rdiv": lambda m, Fm, x: 1.0 / (x * x + 0.5), "pow3": lambda m, Fm, x: x ** 3,
    "detach_mix": lambda m, Fm, x: x.tanh().detach() * x,
    "softmax": lambda m, Fm, x: Fm.softmax(x, -1), "log_softmax": lambda m, Fm, x: Fm.log_softmax(x, -1),
    "softmax0": lambda m, Fm, x: x.softmax(0), "layer_norm": lambda m, Fm, x: Fm.layer_norm(x, (x.shape[-1],)),
    "sum_keep": lambda m, Fm, x: x.sum(-1, keepdim=True) + x, "mean0": lambda m, Fm, x: x - x.mean(0),
    "amax_keep": lambda m, Fm, x: x.amax(-1, keepdim=True) * x,
    "var_keep": lambda m, Fm, x: x.var(-1, keepdim=True) + x,
    "logsumexp": lambda m, Fm, x: x.logsumexp(-1).unsqueeze(-1) - x,
    "tril": lambda m, Fm, x: x.tril(), "masked_fill": lambda m, Fm, x: x.masked_fill(x > 0.5, 0.0),
    "slice": lambda m, Fm, x: x[..., ::2] * 2, "index": lambda m, Fm, x: x[m.tensor([0, 0])] if x.ndim else x,
    "flip_t": lambda m, Fm, x: x.t() if x.ndim == 2 else x, "reshape": lambda m, Fm, x: x.reshape(-1),
    "unsqueeze_cat": lambda m, Fm, x: m.cat([x, x * 2], 0), "stack_sum": lambda m, Fm, x: m.stack([x, x.exp()]).sum(0),
    "chunk": lambda m, Fm, x: x.chunk(2, -1)[0] * x.chunk(2, -1)[-1].sum(),
}.items():
    template(_n)(_f)
# shape-restricted ones
TEMPLATES["softmax"] = (1, lambda s: len(s) >= 1, TEMPLATES["softmax"][2])
TEMPLATES["flip_t"] = (1, _2d, TEMPLATES["flip_t"][2])
TEMPLATES["index"] = (1, lambda s: len(s) >= 1 and s[0] >= 1, TEMPLATES["index"][2])
TEMPLATES["tril"] = (1, _2d, TEMPLATES["tril"][2])
for _k in ("log_softmax", "layer_norm", "sum_keep", "amax_keep", "logsumexp", "slice", "chunk", "softmax0",
           "mean0", "unsqueeze_cat"):
    TEMPLATES[_k] = (1, lambda s: len(s) >= 1 and min(s) >= 1, TEMPLATES[_k][2])
TEMPLATES["var_keep"] = (1, lambda s: len(s) >= 1 and s[-1] >= 2, TEMPLATES["var_keep"][2])

for _n, _f in {
    "add": lambda m, Fm, a, b: a + b, "sub": lambda m, Fm, a, b: a - b, "mul": lambda m, Fm, a, b: a * b,
    "div": lambda m, Fm, a, b: a / (b * b + 0.5), "maximum": lambda m, Fm, a, b: a.maximum(b * 0.9),
    "minimum": lambda m, Fm, a, b: a.minimum(b * 0.9), "where": lambda m, Fm, a, b: m.where(a > b, a, b * 2),
    "lerp": lambda m, Fm, a, b: a.lerp(b, 0.3), "mse": lambda m, Fm, a, b: Fm.mse_loss(a, b) * a,
}.items():
    template(_n, 2, _same)(_f)
template("matmul_t", 2, lambda a, b: a == b and len(a) == 2)(lambda m, Fm, a, b: a @ b.t())
template("matmul", 2, lambda a, b: len(a) == 2 and len(b) == 2 and a[1] == b[0])(lambda m, Fm, a, b: a @ b)
template("add_bcast_row", 2, lambda a, b: len(a) == 2 and len(b) == 2 and min(a) >= 1 and b[1] == a[1])(
    lambda m, Fm, a, b: a + b[:1])


def _setcol(m, Fm, a, b):
    out = a * 1.0
    out[:, 0] = b[:, 1] * 2
    return out


def _inplace_view(m, Fm, x):
    out = x * 1.0
    out[0].mul_(3.0)
    return out


_2d_min2 = lambda a, b=None: len(a) == 2 and min(a) >= 1 and a[1] >= 2 and (b is None or b == a)  # noqa: E731
template("setitem_col", 2, _2d_min2)(_setcol)
template("inplace_view", 1, lambda s: len(s) == 2 and min(s) >= 1)(_inplace_view)
template("mod", 2, _same)(lambda m, Fm, a, b: a % (b.abs() + 0.7))
template("std_keep", 1, lambda s: len(s) >= 1 and s[-1] >= 2)(lambda m, Fm, x: x.std(-1, keepdim=True) * x)
template("norm_keep", 1, lambda s: len(s) >= 1 and min(s) >= 1)(lambda m, Fm, x: x / x.norm(dim=-1, keepdim=True))
# NOTE: an explicit eps: the default is the dtype's epsilon, which differs between f32 and the f64 reference
template("rms_norm", 1, lambda s: len(s) >= 1 and min(s) >= 1)(
    lambda m, Fm, x: Fm.rms_norm(x, (x.shape[-1],), eps=1e-6))
template("cross_entropy", 1, lambda s: len(s) == 2 and min(s) >= 1)(
    lambda m, Fm, x: Fm.cross_entropy(x, m.zeros(x.shape[0], dtype=m.long)) * x)
template("attention", 2, lambda a, b: a == b and len(a) == 2 and min(a) >= 1)(
    lambda m, Fm, q, k: Fm.scaled_dot_product_attention(q[None], k[None], k[None] * 0.5)[0])
template("attention_mask", 2, lambda a, b: len(a) == 2 and b == (a[0], a[0]))(
    lambda m, Fm, q, mask: Fm.scaled_dot_product_attention(q[None], q[None], q[None], attn_mask=mask)[0])
template("split_permute", 1, lambda s: len(s) == 2 and min(s) >= 1)(
    lambda m, Fm, x: x.unsqueeze(0).expand(2, *x.shape).permute(1, 0, 2).reshape(x.shape[0], -1))
template("negative_index", 1, lambda s: len(s) >= 1 and s[0] >= 2)(lambda m, Fm, x: x[-1] * x[m.tensor([-2, 0])])


@dataclass
class Step:
    name: str
    args: tuple[int, ...]


def shapes_after(inputs: list[tuple], program: list[Step]) -> list[tuple]:
    """Shapes of every value (inputs, then one per step), by running the program on torch."""
    vals = [torch.zeros(s, dtype=torch.float64) for s in inputs]
    for st in program:
        vals.append(TEMPLATES[st.name][2](torch, torch.nn.functional, *[vals[i] for i in st.args]))
    return [tuple(v.shape) for v in vals]


def run(m, Fm, program: list[Step], xs: list) -> list:
    vals = list(xs)
    for st in program:
        vals.append(TEMPLATES[st.name][2](m, Fm, *[vals[i] for i in st.args]))
    return vals


def outputs_of(program: list[Step], n_in: int) -> list[int]:
    """The values no later step reads (the program's results)."""
    read = {i for st in program for i in st.args}
    return [i for i in range(n_in, n_in + len(program)) if i not in read] or [n_in + len(program) - 1]


def source(inputs, program: list[Step]) -> str:
    lines = [f"def program({', '.join(f'v{i}' for i in range(len(inputs)))}):   # shapes {inputs}"]
    for k, st in enumerate(program):
        lines.append(f"    v{len(inputs) + k} = TEMPLATES[{st.name!r}](m, F, {', '.join(f'v{i}' for i in st.args)})")
    return "\n".join(lines)


@dataclass
class Case:
    inputs: list[tuple]          # shapes
    program: list[Step]
    seed: int

    def arrays(self):
        rng = np.random.default_rng(self.seed)
        return [rng.uniform(-1.5, 1.5, s) for s in self.inputs]

    def weights(self, shapes):
        rng = np.random.default_rng(self.seed + 1)
        return [rng.uniform(-1, 1, shapes[i]) for i in outputs_of(self.program, len(self.inputs))]


def reference(case: Case):
    """(outputs, loss, input grads) from PyTorch in float64."""
    xs = [torch.tensor(a, requires_grad=True) for a in case.arrays()]
    vals = run(torch, torch.nn.functional, case.program, xs)
    outs = [vals[i] for i in outputs_of(case.program, len(xs))]
    ws = case.weights([tuple(v.shape) for v in vals])
    loss = sum((o * torch.tensor(w)).sum() for o, w in zip(outs, ws))
    grads = torch.autograd.grad(loss, xs, allow_unused=True)
    return ([o.detach().numpy() for o in outs], loss.item(),
            [g.numpy() if g is not None else np.zeros(x.shape) for g, x in zip(grads, xs)])


def _loss(outs, ws):
    total = None
    for o, w in zip(outs, ws):
        term = (o * tg.tensor(w.astype(np.float32))).sum()
        total = term if total is None else total + term
    return total


def ours(case: Case, mode: str, backend: str | None):
    """(outputs, loss, input grads) from tracegrad in float32: mode 'eager', 'inside' or 'outside'."""
    arrays = case.arrays()
    n_in = len(arrays)
    xs = [tg.tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    shapes = shapes_after(case.inputs, case.program)
    ws = case.weights(shapes)
    pick = outputs_of(case.program, n_in)

    def forward(*xs):
        vals = run(tg, F, case.program, list(xs))
        return [vals[i] for i in pick]

    if mode == "eager":
        outs = forward(*xs)
        loss = _loss(outs, ws)
        loss.backward()
    elif mode == "inside":
        def step(*xs):
            outs = forward(*xs)
            loss = _loss(outs, ws)
            loss.backward()
            return outs, loss
        outs, loss = tg.compile(step, backend=backend)(*xs)
    else:
        outs = tg.compile(lambda *xs: forward(*xs), backend=backend)(*xs)
        loss = _loss(outs, ws)
        loss.backward()
    grads = [x.grad.numpy() if x.grad is not None else np.zeros(x.shape) for x in xs]
    return [o.numpy() for o in outs], loss.item(), grads


def compare(case: Case, mode: str, backend: str | None, rtol=2e-4, atol=2e-4) -> None:
    """Assert tracegrad (float32) agrees with PyTorch (float64); the message is a runnable repro."""
    want = reference(case)
    got = ours(case, mode, backend)
    # NOTE: float32 against float64: a few ulps of fp32 accumulated over ~10 ops
    where = f"mode={mode} backend={backend} seed={case.seed}\n{source(case.inputs, case.program)}"
    for kind, w, g in (("output", want[0], got[0]), ("grad", want[2], got[2])):
        for i, (a, b) in enumerate(zip(w, g)):
            assert np.asarray(b).shape == np.asarray(a).shape, f"{kind} {i} shape\n{where}"
            np.testing.assert_allclose(np.asarray(b, np.float64), a, rtol=rtol, atol=atol,
                                       err_msg=f"{kind} {i}\n{where}")
    np.testing.assert_allclose(got[1], want[1], rtol=rtol, atol=atol * 10, err_msg=f"loss\n{where}")
