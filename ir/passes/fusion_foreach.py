"""Horizontal fusion into foreach kernels: independent pointwise groups packed into few launches
(the optimizer update of every parameter; the prologue of weight casts under autocast). Each part
keeps its own iteration space; the launch runs them side by side.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import networkx as nx

if TYPE_CHECKING:
    from .fusion import Fuser

log = logging.getLogger("tracegrad.fusion")

FOREACH_PARTS, FOREACH_ARGS = 16, 160   # groups and buffers in one foreach launch


def pack_foreach(f: Fuser) -> None:
    """Pack independent pointwise groups into few launches: the optimizer update of all parameters,
    and the prologue (groups that read only graph inputs, e.g. autocast's casts of the weights)."""
    def pointwise(g):
        grp = f.groups.get(g)
        return grp is not None and grp.kind == "pointwise" and not grp.parts
    order = list(nx.lexicographical_topological_sort(f.dag, key=lambda g: f.groups[g].members[0]))
    # NOTE: no edge into a prologue group: a state's new value waits for the old one's readers (Fuser.state_last)
    prologue = [g for g in order if pointwise(g) and not f.dag.in_degree(g)
                and all(v not in f.prod for v in f.inputs_of(g))]
    _pack_runs(f, prologue, independent=True)
    order = list(nx.lexicographical_topological_sort(f.dag, key=lambda g: f.groups[g].members[0]))
    update = [g if pointwise(g) and all(f.nodes[m].phase == "update" for m in f.groups[g].members)
              else None for g in order]
    _pack_runs(f, update, independent=False)


def _pack_runs(f: Fuser, gids: list, independent: bool) -> None:
    """Pack each run of groups (None breaks a run) into launches while they fit one. Unless
    `independent`, a group that depends on the launch being filled waits for the next one, so the
    updates of all parameters share launches and their step counts' increments follow in others."""
    run: list[int] = []
    for g in gids + [None]:
        if g is not None:
            run.append(g)
            continue
        while run:
            run = _fill(f, run, independent)


def _fill(f: Fuser, run: list[int], independent: bool) -> list[int]:
    """Pack groups of `run` in order into launches; what depends on the launch being filled is
    returned for the next pass."""
    later: list[int] = []
    bucket: list[int] = []
    ins: set = set()
    outs = 0
    for g in run + [None]:
        body = f.body(f.groups[g].members) if g is not None else None
        if g is not None and bucket and not independent and any(nx.has_path(f.dag, h, g) for h in bucket):
            later.append(g)
            continue
        if g is not None and bucket and len(bucket) < FOREACH_PARTS \
                and len(ins | set(body.inputs)) + outs + len(body.outputs) <= FOREACH_ARGS:
            bucket.append(g)
            ins |= set(body.inputs)
            outs += len(body.outputs)
            continue
        if len(bucket) > 1:
            _pack(f, bucket)
        bucket, ins, outs = ([g], set(body.inputs), len(body.outputs)) if g is not None else ([], set(), 0)
    return later


def _pack(f: Fuser, gids: list[int]) -> None:
    first = f.groups[gids[0]]
    first.parts = [list(f.groups[g].members) for g in gids]
    for g in gids[1:]:
        f.merge(gids[0], g)
    first.kind = "foreach"
    log.debug("foreach kernel of %d groups", len(gids))
