"""Ring attention (Liu et al. 2023) for context parallelism: q, k, v split along the sequence
over the cp ranks; the k/v blocks travel around the ring (`send` to the next rank, `recv` from
the previous), and each rank folds every block into its queries with the online softmax of
flash attention (Dao et al. 2022):

    m' = max(m, rowmax(s)),  l' = l e^(m - m') + rowsum(e^(s - m')),  o' = o e^(m - m') + e^(s - m') v

The backward sends k, v and their gradient accumulators around the ring once more, so each
block's dk, dv come home after n steps. Causal masks use the global positions of each block:
with the zig-zag split rank r holds blocks r and 2n-1-r of 2n, so every rank does equal work.
"""
from __future__ import annotations

import math

from ...types import int64
from .builder import DValue
from .spec import S


def _positions(b, owner: int, t: int, device: str):
    """Global positions [t] of the sequence rows rank `owner` holds."""
    o = b.out
    i = o.iota(shape=(t,), axis=0, dtype=int64, device=device)
    if not b.zigzag:
        return o.add(i, owner * t)
    c, n = t // 2, b.n
    return o.where(o.lt(i, c), o.add(i, owner * c), o.add(i, (2 * n - 1 - owner) * c - c))


def _scores(b, q, k, owner, is_causal, scale):
    o = b.out
    s = o.mul(o.matmul(q, o.permute(k, dims=(0, 1, 3, 2))), scale)
    if is_causal:
        t, dev = q.type.shape[2], q.type.device
        keep = o.ge(o.reshape(_positions(b, b.r, t, dev), shape=(t, 1)),
                    o.reshape(_positions(b, owner, t, dev), shape=(1, t)))
        s = o.where(keep, s, -math.inf)
    return s


def _pass(b, *xs):
    """Send xs to the next rank of the ring; the previous rank's, received.

    NOTE: each send is followed by its receive, so every rank's (send x, recv x) pair meets the
    neighbours' same pair: the communicators issue them together (NCCL: one group), never a
    send that waits for a receive queued behind another send."""
    o, n = b.out, b.n
    nxt, prv = b.group[(b.r + 1) % n], b.group[(b.r - 1) % n]
    out = []
    for x in xs:
        o.send(x, peer=nxt, group=b.group)
        out.append(o.recv(shape=x.type.shape, dtype=x.type.dtype, device=x.type.device, peer=prv, group=b.group))
    return out


def ring_attention(b, ins: list[DValue], attrs: dict, gtypes) -> list[DValue]:
    q, k, v = (b.to(h, S(2)).local for h in ins)
    o, n = b.out, b.n
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.type.shape[-1])
    m = l = acc = None
    for i in range(n):
        s = _scores(b, q, k, (b.r - i) % n, attrs["is_causal"], scale)
        bm = o.max(s, axes=(3,), keepdim=True)
        new = bm if m is None else o.maximum(m, bm)    # finite: block 0 is this rank's own (the diagonal)
        p = o.exp(o.sub(s, new))
        ps, pv = o.sum(p, axes=(3,), keepdim=True), o.matmul(p, v)
        if m is None:
            l, acc = ps, pv
        else:
            alpha = o.exp(o.sub(m, new))
            l, acc = o.add(o.mul(l, alpha), ps), o.add(o.mul(acc, alpha), pv)
        m = new
        if i < n - 1:
            k, v = _pass(b, k, v)
    out = o.div(acc, l)
    lse = o.reshape(o.add(o.log(l), m), shape=l.type.shape[:-1])
    return b.local("reshape", [b.wrap(out, S(2)), ], dict(shape=out.type.shape), [S(2)], gtypes[:1]) + \
        b.local("reshape", [b.wrap(lse, S(2))], dict(shape=lse.type.shape), [S(2)], gtypes[1:])


def ring_attention_bwd(b, ins: list[DValue], attrs: dict, gtypes) -> list[DValue]:
    q, k, v, out, lse, dout = (b.to(h, S(2)).local for h in ins)
    o, n = b.out, b.n
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.type.shape[-1])
    dd = o.sum(o.mul(dout, out), axes=(3,), keepdim=True)
    lse4 = o.reshape(lse, shape=lse.type.shape + (1,))
    dq = dk = dv = None
    for i in range(n):
        p = o.exp(o.sub(_scores(b, q, k, (b.r - i) % n, attrs["is_causal"], scale), lse4))
        pt = o.permute(p, dims=(0, 1, 3, 2))
        dv_i = o.matmul(pt, dout)
        ds = o.mul(o.mul(p, o.sub(o.matmul(dout, o.permute(v, dims=(0, 1, 3, 2))), dd)), scale)
        dq_i, dk_i = o.matmul(ds, k), o.matmul(o.permute(ds, dims=(0, 1, 3, 2)), q)
        dq = dq_i if dq is None else o.add(dq, dq_i)
        dk = dk_i if dk is None else o.add(dk, dk_i)
        dv = dv_i if dv is None else o.add(dv, dv_i)
        if i < n - 1:
            k, v, dk, dv = _pass(b, k, v, dk, dv)
        else:          # the accumulators of the block this rank holds go home to its owner
            dk, dv = _pass(b, dk, dv)
    return [b.local("reshape", [b.wrap(x, S(2))], dict(shape=x.type.shape), [S(2)], [t])[0]
            for x, t in zip((dq, dk, dv), gtypes)]



