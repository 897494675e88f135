"""Collective primitives. `group` is the tuple of ranks taking part; a runtime communicator
(local threads, MPI, NCCL) carries them out. With one rank every collective is the identity.

VJP pairs (Megatron): all_reduce <-> identity, all_gather <-> reduce_scatter, send <-> recv.
"""
from __future__ import annotations

from ..types import TensorType
from .registry import defop, fail, vjp

GROUP = dict(group=(0,))


def _same(op):
    def infer(ts, **attrs):
        return ts[0]
    return infer


def _axis_scaled(op, factor):
    def infer(ts, axis, group):
        t = ts[0]
        n = len(group)
        size = t.shape[axis] * n if factor > 0 else t.shape[axis] // n
        if factor < 0 and t.shape[axis] % n:
            fail(op, ts, f"axis {axis} of size {t.shape[axis]} does not split over {n} ranks")
        return t.with_(shape=t.shape[:axis] + (size,) + t.shape[axis + 1:])
    return infer


defop("all_reduce", "collective", _same("all_reduce"), 1, dict(op="sum", **GROUP))
defop("all_gather", "collective", _axis_scaled("all_gather", +1), 1, dict(axis=0, **GROUP))
defop("reduce_scatter", "collective", _axis_scaled("reduce_scatter", -1), 1, dict(axis=0, **GROUP))
defop("broadcast", "collective", _same("broadcast"), 1, dict(root=0, **GROUP))
defop("send", "collective", lambda ts, peer, group: [], 1, dict(peer=0, **GROUP), nondiff=True, side_effect=True)
defop("recv", "collective", lambda ts, shape, dtype, device, peer, group: TensorType(tuple(shape), dtype, device),
      0, dict(shape=(), dtype=None, device="cpu", peer=0, **GROUP), nondiff=True, side_effect=True)


@vjp("all_reduce")
def _all_reduce_vjp(b, n, gs):
    # NOTE: the loss downstream is one logical value replicated on every rank (Megatron's
    # convention), so sum's backward is the identity and mean's scales by 1/ranks
    if n.attrs["op"] == "mean":
        return b.mul(gs[0], 1.0 / len(n.attrs["group"])),
    if n.attrs["op"] != "sum":
        raise NotImplementedError(f"the gradient of all_reduce(op={n.attrs['op']!r}) is not defined")
    return gs[0],


vjp("all_gather")(lambda b, n, gs: (b.reduce_scatter(gs[0], axis=n.attrs["axis"], group=n.attrs["group"]),))
vjp("reduce_scatter")(lambda b, n, gs: (b.all_gather(gs[0], axis=n.attrs["axis"], group=n.attrs["group"]),))
vjp("broadcast")(lambda b, n, gs: (b.all_reduce(gs[0], op="sum", group=n.attrs["group"]),))
