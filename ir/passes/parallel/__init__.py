"""Parallel passes: each mesh axis a `Graph -> Graph` transform of the single-device step
(tp: `tensor_parallel`, cp: `context_parallel`, pp: `pipeline_parallel`), the sharding rules they share, and the plans that choose styles."""
from .builder import ParallelPlanError
from .plan import Choice, Plan
from .cp import context_parallel
from .pp import pipeline_parallel
from .tp import tensor_parallel

__all__ = ["ParallelPlanError", "Choice", "Plan", "context_parallel", "pipeline_parallel", "tensor_parallel"]
