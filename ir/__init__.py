"""tracegrad's IR: typed SSA graphs, the op registry, printing, verification and passes.

This package imports nothing else of tracegrad's; runtime, codegen and the frontend build on it.
"""
if __name__ == "ir":   # imported as its folder name from the repository root
    raise ImportError("`import ir` loaded the folder ir/ of the source tree, which installs as "
                      "`tracegrad.ir`: import tracegrad.ir instead (a second copy would hold a second "
                      "op registry)")
from . import ops
from .builder import Builder, GraphBuilder
from .errors import IRError, OpTypeError, UnknownOpError, VerifyError
from .graph import Graph, Node, Provenance, Value
from .printer import format_graph
from .types import DType, TensorType, dtype, promote
from .verify import verify

__all__ = ["ops", "Builder", "GraphBuilder", "IRError", "OpTypeError", "UnknownOpError", "VerifyError", "Graph",
           "Node", "Provenance", "Value", "format_graph", "DType", "TensorType", "dtype", "promote", "verify"]
