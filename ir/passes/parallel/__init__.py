"""Parallel passes: each turns the single-device graph of a step into one rank's graph along one
axis of the mesh (`ir/mesh.py`), as a named `Graph -> Graph` stage of its own, so the
single-device graph ("traced") stays printable and every axis' rewrite can be diffed against it.

- `dp.py`: data parallelism; every rank runs the whole step on its local batch, and the
  gradients of the state (parameters) are averaged over the dp group with `all_reduce`.
- `buckets.py`: packs those all_reduces into a few flat buckets, each sent as soon as its last
  gradient is computed.
- `tp.py` (`tensor_parallel`): Megatron column/row pairs, heads, vocabulary-parallel embedding
  and cross-entropy; `cp.py` (`context_parallel`): the sequence split zig-zag, ring attention;
  `pp.py` (`pipeline_parallel`): stages cut at module boundaries, micro-batches scheduled AFAB or
  1F1B. They share the sharding rules of `builder.py`; `plan.py` chooses each module's style.
"""
from .buckets import bucket_all_reduces
from .builder import ParallelPlanError
from .cp import context_parallel
from .dp import data_parallel
from .plan import Choice, Plan
from .pp import pipeline_parallel
from .tp import tensor_parallel

__all__ = ["ParallelPlanError", "Choice", "Plan", "bucket_all_reduces", "context_parallel", "data_parallel",
           "pipeline_parallel", "tensor_parallel"]
