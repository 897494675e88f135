"""Movement primitives: reshape, permute, expand, slice, pad, concat, and the index ops
(take / gather and their transposes index_add / scatter_add).

Backends may turn reshape, permute, expand and slice into views or index arithmetic; the IR only
says what values come out.
"""
from __future__ import annotations

from ..types import TensorType
from .registry import defop, fail, vjp
from .elementwise import _same_device


def _reshape_infer(ts, shape):
    if TensorType(shape, ts[0].dtype).numel != ts[0].numel or any(s < 0 for s in shape):
        fail("reshape", ts, f"cannot reshape {list(ts[0].shape)} ({ts[0].numel} elements) to {list(shape)}")
    return ts[0].with_(shape=shape)


defop("reshape", "movement", _reshape_infer, 1, dict(shape=()))
vjp("reshape")(lambda b, n, gs: (b.reshape_to(gs[0], b.shape(n.inputs[0])),))


def _permute_infer(ts, dims):
    if sorted(dims) != list(range(ts[0].ndim)):
        fail("permute", ts, f"dims {list(dims)} are not a permutation of {ts[0].ndim} axes")
    return ts[0].with_(shape=tuple(ts[0].shape[d] for d in dims))


def inverse_perm(dims):
    inv = [0] * len(dims)
    for i, d in enumerate(dims):
        inv[d] = i
    return tuple(inv)


defop("permute", "movement", _permute_infer, 1, dict(dims=()))
vjp("permute")(lambda b, n, gs: (b.permute(gs[0], dims=inverse_perm(n.attrs["dims"])),))


def _expand_infer(ts, shape):
    src = ts[0].shape
    lead = len(shape) - len(src)
    if lead < 0 or any(s != 1 and s != shape[lead + i] for i, s in enumerate(src)):
        fail("expand", ts, f"cannot expand {list(src)} to {list(shape)}")
    return ts[0].with_(shape=shape)


defop("expand", "movement", _expand_infer, 1, dict(shape=()))
vjp("expand")(lambda b, n, gs: (b.sum_to(gs[0], b.shape(n.inputs[0])),))


def slice_len(start, stop, step):
    return max(0, (stop - start + step - 1) // step)


def _slice_infer(ts, starts, stops, steps):
    shape = ts[0].shape
    if not len(starts) == len(stops) == len(steps) == len(shape):
        fail("slice", ts, "starts/stops/steps need one entry per axis")
    for a, (lo, hi, st) in enumerate(zip(starts, stops, steps)):
        if st < 1 or not 0 <= lo <= shape[a] or not lo <= hi <= shape[a]:
            fail("slice", ts, f"axis {a}: slice {lo}:{hi}:{st} is out of range for size {shape[a]}")
    return ts[0].with_(shape=tuple(slice_len(*s) for s in zip(starts, stops, steps)))


defop("slice", "movement", _slice_infer, 1, dict(starts=(), stops=(), steps=()))


@vjp("slice")
def _slice_vjp(b, n, gs):
    # spread each strided axis back out (interleave zeros), then pad to the input's extent
    g, shape = gs[0], b.shape(n.inputs[0])
    for a, (lo, st) in enumerate(zip(n.attrs["starts"], n.attrs["steps"])):
        if st > 1:
            gsh = b.shape(g)
            col = b.reshape_to(g, gsh[:a + 1] + (1,) + gsh[a + 1:])
            zeros = b.full(gsh[:a + 1] + (st - 1,) + gsh[a + 1:], 0, b.dtype(g), b.type_of(g).device)
            g = b.reshape_to(b.concat(col, zeros, axis=a + 1), gsh[:a] + (gsh[a] * st,) + gsh[a + 1:])
        have = b.shape(g)[a]
        hi = shape[a] - lo - have
        if hi < 0:   # the interleave ran past the end
            gsh = b.shape(g)
            g = b.slice(g, starts=(0,) * len(gsh), stops=gsh[:a] + (have + hi,) + gsh[a + 1:], steps=(1,) * len(gsh))
            hi = 0
        if lo or hi:
            pads = tuple((lo, hi) if i == a else (0, 0) for i in range(len(shape)))
            g = b.pad(g, pads=pads, value=0.0)
    return g,


def _pad_infer(ts, pads, value):
    if len(pads) != ts[0].ndim or any(lo < 0 or hi < 0 for lo, hi in pads):
        fail("pad", ts, f"pads {pads} need one non-negative (lo, hi) pair per axis")
    return ts[0].with_(shape=tuple(s + lo + hi for s, (lo, hi) in zip(ts[0].shape, pads)))


defop("pad", "movement", _pad_infer, 1, dict(pads=(), value=0.0))


@vjp("pad")
def _pad_vjp(b, n, gs):
    shape = b.shape(n.inputs[0])
    lo = tuple(p[0] for p in n.attrs["pads"])
    return b.slice(gs[0], starts=lo, stops=tuple(l + s for l, s in zip(lo, shape)), steps=(1,) * len(shape)),


def _concat_infer(ts, axis):
    if not ts:
        fail("concat", ts, "needs at least one input")
    dev = _same_device("concat", ts)
    first = ts[0]
    for t in ts[1:]:
        if t.dtype != first.dtype or t.ndim != first.ndim or any(
                s != f for i, (s, f) in enumerate(zip(t.shape, first.shape)) if i != axis):
            fail("concat", ts, f"inputs must match in dtype and in every axis but {axis}")
    return TensorType(first.shape[:axis] + (sum(t.shape[axis] for t in ts),) + first.shape[axis + 1:],
                      first.dtype, dev)


defop("concat", "movement", _concat_infer, None, dict(axis=0))


@vjp("concat")
def _concat_vjp(b, n, gs):
    axis, out, at = n.attrs["axis"], b.shape(gs[0]), 0
    grads = []
    for x in n.inputs:
        size = b.shape(x)[axis]
        starts = tuple(at if i == axis else 0 for i in range(len(out)))
        stops = tuple(at + size if i == axis else s for i, s in enumerate(out))
        grads.append(b.slice(gs[0], starts=starts, stops=stops, steps=(1,) * len(out)))
        at += size
    return tuple(grads)


# -- index ops --------------------------------------------------------------------------------
def _check_index(op, ts, idx):
    if not idx.dtype.is_integer:
        fail(op, ts, f"indices must be integers, got {idx.dtype.name}")


def _take_infer(ts, axis):
    x, idx = ts
    _check_index("take", ts, idx)
    return x.with_(shape=x.shape[:axis] + idx.shape + x.shape[axis + 1:])


defop("take", "index", _take_infer, 2, dict(axis=0), doc="np.take(x, idx, axis): embedding, index_select")
vjp("take")(lambda b, n, gs: ((lambda: b.index_add(b.zeros_like(n.inputs[0]), n.inputs[1], gs[0],
                                                   axis=n.attrs["axis"])), None))


def _index_add_infer(ts, axis):
    x, idx, src = ts
    _check_index("index_add", ts, idx)
    want = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    if src.shape != want or src.dtype != x.dtype:
        fail("index_add", ts, f"source must be {x.dtype.short}{list(want)}")
    return x


defop("index_add", "index", _index_add_infer, 3, dict(axis=0), doc="x with src added at take(x, idx, axis)'s places")
vjp("index_add")(lambda b, n, gs: (gs[0], None, (lambda: b.take(gs[0], n.inputs[1], axis=n.attrs["axis"]))))


def _gather_infer(ts, axis, op="gather"):
    x, idx = ts[:2]
    _check_index(op, ts, idx)
    if idx.ndim != x.ndim or any(i != s for a, (i, s) in enumerate(zip(idx.shape, x.shape)) if a != axis):
        fail(op, ts, f"index shape must equal the input's shape except along axis {axis}")
    return x.with_(shape=idx.shape)


defop("gather", "index", _gather_infer, 2, dict(axis=0), doc="np.take_along_axis(x, idx, axis)")
vjp("gather")(lambda b, n, gs: ((lambda: b.scatter_add(b.zeros_like(n.inputs[0]), n.inputs[1], gs[0],
                                                       axis=n.attrs["axis"])), None))


def _scatter_add_infer(ts, axis):
    x, idx, src = ts
    _gather_infer(ts, axis, "scatter_add")
    if src.shape != idx.shape or src.dtype != x.dtype:
        fail("scatter_add", ts, "source must match the index's shape and the input's dtype")
    return x


defop("scatter_add", "index", _scatter_add_infer, 3, dict(axis=0), doc="x with src added at gather's places")
vjp("scatter_add")(lambda b, n, gs: (gs[0], None, (lambda: b.gather(gs[0], n.inputs[1], axis=n.attrs["axis"]))))
