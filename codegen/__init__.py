"""tracegrad's code generators: a graph becomes a program that the runtime runs.

The numpy writer (`numpy_backend`: one lowering per primitive; `numpy_program`: a whole graph as
straight-line Python), the Triton writer (`triton_codegen`, `triton_kernel`, `triton_ops`;
`triton_program` loads and runs it) and the eager one-op path (`eager`, CPU and CUDA).
"""
if __name__ == "codegen":   # imported as its folder name from the repository root
    raise ImportError("`import codegen` loaded the folder codegen/ of the source tree, which installs as "
                      "`tracegrad.codegen`: import tracegrad.codegen instead (a second copy would hold a second "
                      "set of lowering caches)")
