"""What the Triton-on-CPU tests share: a private kernel cache per module, and the check that a graph
gives the same results on the numpy backend and fused, as Triton under the interpreter."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tracegrad.codegen import numpy_program
from tracegrad.ir.passes.fusion import format_fused, fuse
from tracegrad.codegen.triton_program import TritonProgram


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory):
    old = os.environ.get("TRACEGRAD_CACHE_DIR")
    os.environ["TRACEGRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("kernels"))
    yield
    if old is None:
        os.environ.pop("TRACEGRAD_CACHE_DIR")
    else:
        os.environ["TRACEGRAD_CACHE_DIR"] = old


def both(graph, arrays):
    """(numpy results, Triton-interpreted results) of one graph."""
    want = numpy_program.generate(graph)(*arrays)
    got = TritonProgram(fuse(graph))(*arrays)
    return want, got


def assert_agree(graph, arrays, rtol=2e-5, atol=1e-6):
    want, got = both(graph, arrays)
    for w, g, v in zip(want, got, graph.outputs):
        assert g.shape == w.shape and g.dtype == w.dtype, (v.name, g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=rtol, atol=atol,
                                   err_msg=f"{v.name}\n{format_fused(fuse(graph))}")
