"""tracegrad's runtime: what runs a program, knowing no graph.

Devices and buffers (`devices`), launching Triton kernels without PyTorch (`triton_host`, with
`triton_interpret` for the CPU and `kernel_cache` for compiled modules), the libraries generated
code calls (`numpy_kernels`, `cupy_kernels`, `triton_lib`, `externs`), the counter-based RNG
(`rng`), hand-written kernel templates (`templates/`) and the communicators (`comm`: the
protocol and one rank; `comm_local`: ranks as threads). It imports only the IR's types.
"""
if __name__ == "runtime":   # imported as its folder name from the repository root
    raise ImportError("`import runtime` loaded the folder runtime/ of the source tree, which installs as "
                      "`tracegrad.runtime`: import tracegrad.runtime instead (a second copy would hold a second "
                      "set of kernel caches and communicators)")
