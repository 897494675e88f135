"""tracegrad's IR: typed SSA graphs, the op registry, printing, verification and passes.

This package imports nothing else of tracegrad's; codegen, runtime and the frontend build on it.
"""
from . import ops
from .builder import Builder, GraphBuilder
from .errors import IRError, OpTypeError, UnknownOpError, VerifyError
from .graph import Graph, Node, Provenance, Value
from .printer import format_graph
from .types import DType, TensorType, dtype, promote
from .verify import verify

__all__ = ["ops", "Builder", "GraphBuilder", "IRError", "OpTypeError", "UnknownOpError", "VerifyError", "Graph",
           "Node", "Provenance", "Value", "format_graph", "DType", "TensorType", "dtype", "promote", "verify"]
