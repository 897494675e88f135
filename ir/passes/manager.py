"""The pass manager: runs named `Graph -> Graph` passes, keeps `(name, graph, ms)` for every
stage, and verifies the graph after each pass when TRACEGRAD_CHECK=1.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from ..graph import Graph
from ..verify import verify


@dataclass(frozen=True)
class Stage:
    name: str
    graph: Graph
    ms: float


class PassManager:
    def __init__(self, title: str, check: bool | None = None):
        self.title = title
        self.stages: list[Stage] = []
        self.check = os.environ.get("TRACEGRAD_CHECK", "0") not in ("", "0") if check is None else check

    def record(self, name: str, graph: Graph, ms: float) -> Graph:
        graph = graph.with_(meta=dict(title=self.title, stage=name, stage_index=len(self.stages), ms=ms))
        if self.check:
            verify(graph, after=name)
        self.stages.append(Stage(name, graph, ms))
        return graph

    def run(self, name: str, fn: Callable[[Graph], Graph], graph: Graph) -> Graph:
        t0 = time.perf_counter()
        out = fn(graph)
        return self.record(name, out, (time.perf_counter() - t0) * 1e3)

    def __getitem__(self, name: str) -> Graph:
        for s in reversed(self.stages):
            if s.name == name:
                return s.graph
        raise KeyError(f"no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")
