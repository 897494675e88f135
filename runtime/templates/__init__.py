"""tracegrad.runtime.templates: hand-written kernel templates (matmul, attention, paged attention,
cross-entropy).

Each module holds its Triton kernels and host functions that take numpy
arrays (run under Triton's interpreter) or CuPy arrays (compiled, on CUDA)
and return arrays of the same kind; they need triton.

    matmul.matmul                         act(a @ b + bias) + residual
    attention.attention_forward/backward  flash attention, FlashAttention-2
    paged_attention.paged_attention       decode attention through a paged KV cache's block table
    cross_entropy.cross_entropy(_forward/_backward)
                                          fused cross-entropy over [N, V] logits

NOTE: the functions are not re-exported here: `templates.matmul` would then
be the function or the module depending on what was imported first.
"""
