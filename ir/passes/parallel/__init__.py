"""Parallel passes: each turns the single-device graph of a step into one rank's graph along one
axis of the mesh (`ir/mesh.py`), as a named `Graph -> Graph` stage of its own, so the
single-device graph ("traced") stays printable and every axis' rewrite can be diffed against it.

- `dp.py`: data parallelism; every rank runs the whole step on its local batch, and the
  gradients of the state (parameters) are averaged over the dp group with `all_reduce`.
- `buckets.py`: packs those all_reduces into a few flat buckets, each sent as soon as its last
  gradient is computed.

Tensor, pipeline and context partitioners (`tp.py`, `pp.py`, `cp.py`) sit beside `dp.py` and
follow its form: a function `(graph, mesh/group, ...) -> graph` that reads what the trace recorded
in `graph.meta` and keeps the names of everything it leaves alone.
"""
from .buckets import bucket_all_reduces
from .dp import data_parallel

__all__ = ["bucket_all_reduces", "data_parallel"]
