"""A compiled step replayed as a CUDA graph: one launch for the whole step instead of one Python
call per kernel (DESIGN section 6).

    step = CapturedStep(program)        # program(*arrays) -> tuple of arrays, on CUDA buffers
    outs = step(*arrays)                # call 1 runs the program; call 2 captures it, then replays

The first call runs the program as it is (it compiles, measures and allocates what it needs once).
The second call captures it on a side stream, into the device's graph memory pool, and launches
the graph. Every captured step of a device shares that pool (as vLLM's graphs of all batch sizes
do), so graphs cost the largest one's memory, not the sum. That is safe because replays run one
after another on one stream and a graph's results are copied out before anything else runs: what
one graph writes may be another's scratch in between. Nothing outside a capture allocates from the
pool. A graph reads and writes fixed addresses, so inputs are of two kinds, told apart by
comparing the first two calls:
- *stable*: at the same address in both (weights and optimizer state, which the step updates in
  place). The graph works on the caller's buffer itself; if a later call brings another buffer
  (the user replaced a weight), the graph is dropped and captured again.
- *per call*: elsewhere each time (a batch). The graph reads a buffer of its own, which each call
  fills with a device-to-device copy.
An output written over a stable input is that input; any other output lives in the graph's buffers
and would be overwritten by the next replay, so each call hands back a copy of it.

A program that cannot be captured (it reads a device value on the host, or runs a collective that
is not a stream operation) runs uncaptured from then on; `reason` says why.
"""
from __future__ import annotations

from .devices import TypedArray

RECAPTURES = 3       # captures after which a step whose stable inputs keep moving runs uncaptured


class CapturedStep:
    def __init__(self, fn, platform=None):
        self.fn = fn
        self.platform = platform            # made at the first call: CupyGraphs by default
        self.seen: list[int] | None = None        # input addresses of the last uncaptured call
        self.graph = None
        self.reason = ""                           # why the step runs uncaptured, once it does
        self.captures = self.replays = 0

    @property
    def active(self) -> bool:
        return not self.reason

    def __call__(self, *arrays):
        if self.reason:
            return self.fn(*arrays)
        try:
            p = self.platform = self.platform or CupyGraphs()
            ptrs = [p.ptr(a) for a in arrays]
        except Exception as e:     # NOTE: no CUDA graphs here (a stand-in of CuPy, an old CuPy)
            self.reason = f"unavailable: {type(e).__name__}: {e}".splitlines()[0][:200]
            return self.fn(*arrays)
        if self.graph is not None and any(s and q != c for s, q, c in zip(self.stable, ptrs, self.captured)):
            self.graph, self.seen = None, None      # a weight moved: capture again from the next call
            if self.captures >= RECAPTURES:
                self.reason = f"its state moved to new buffers after {self.captures} captures"
        if self.graph is None:
            if self.seen is None or self.reason:
                self.seen = ptrs
                return self.fn(*arrays)
            try:
                self._capture(arrays, ptrs)
            except Exception as e:      # NOTE: nothing ran during the failed capture; run it now
                self.reason = f"capture failed: {type(e).__name__}: {e}".splitlines()[0][:200]
                return self.fn(*arrays)
        for j, a in enumerate(arrays):
            if not self.stable[j] and ptrs[j] != self.captured[j]:
                p.copy_into(self.static[j], a)
        p.launch(self.graph)
        self.replays += 1
        return tuple(arrays[j] if j is not None and self.stable[j] else p.copy(o)
                     for o, j in zip(self.outs, self.alias))

    def _capture(self, arrays, ptrs) -> None:
        p = self.platform
        self.stable = [q == s for q, s in zip(ptrs, self.seen)]
        self.static = [a if s else p.empty_like(a) for a, s in zip(arrays, self.stable)]
        for a, b, s in zip(arrays, self.static, self.stable):
            if not s:
                p.copy_into(b, a)
        self.captured = [p.ptr(a) for a in self.static]
        self.graph, outs = p.capture(self.fn, self.static)
        self.outs = list(outs)
        # NOTE: an output is an input only when it is the whole buffer as it came (a view of it with
        # another shape is copied out like any other result)
        by_buffer = {_buffer(p, a): j for j, a in enumerate(self.static)}
        self.alias = [by_buffer.get(_buffer(p, o)) for o in self.outs]
        self.captures += 1

    def describe(self) -> str:
        """One line for `step.explain()`."""
        if self.reason:
            return f"CUDA graph: not used ({self.reason})"
        if self.graph is None:
            return "CUDA graph: captured at the second call"
        copied = sum(not s for s in self.stable)
        return (f"CUDA graph: captured {self.captures}x, replayed {self.replays}x; {copied} of "
                f"{len(self.stable)} inputs copied in per call, {sum(j is None for j in self.alias)} outputs copied out")


def _buffer(p, a) -> tuple:
    """What makes an array the same buffer, as the caller sees it: address, size, shape, dtype."""
    return p.ptr(a), p.nbytes(a), tuple(a.shape), str(a.dtype)


def _raw(a):
    return a.array if type(a) is TypedArray else a


class CupyGraphs:
    """Capture and replay through CuPy (streams, graphs, memory pools)."""

    _shared: dict[int, tuple] = {}          # device id -> (graph memory pool, capture stream)

    def __init__(self):
        import cupy
        self.cupy = cupy
        dev = cupy.cuda.Device().id
        if dev not in self._shared:
            self._shared[dev] = cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
        self.pool, self.stream = self._shared[dev]

    def ptr(self, a) -> int:
        return _raw(a).data.ptr

    def nbytes(self, a) -> int:
        return _raw(a).nbytes

    def empty_like(self, a):
        b = self.cupy.empty_like(_raw(a))
        return TypedArray(b, a.dtype) if type(a) is TypedArray else b

    def copy_into(self, dst, src) -> None:
        self.cupy.copyto(_raw(dst), _raw(src))

    def copy(self, a):
        b = _raw(a).copy()
        return TypedArray(b, a.dtype) if type(a) is TypedArray else b

    def capture(self, fn, arrays):
        cupy, s = self.cupy, self.stream
        here = cupy.cuda.get_current_stream()
        s.wait_event(here.record())            # the inputs' copies are done before the graph reads them
        mode = getattr(cupy.cuda.runtime, "streamCaptureModeRelaxed", None)
        # NOTE: the uncaptured first call's buffers, cached by the default pool, are not needed again;
        # freed before the capture, their memory can hold the graph's (a server sized its KV cache to
        # the free memory, and the two together ran out)
        cupy.get_default_memory_pool().free_all_blocks()
        with cupy.cuda.using_allocator(self.pool.malloc), s:
            s.begin_capture(*(() if mode is None else (mode,)))
            try:
                outs = fn(*arrays)
            finally:
                graph = s.end_capture()
        here.wait_event(s.record())
        return graph, outs

    def launch(self, graph) -> None:
        try:
            graph.launch(self.cupy.cuda.get_current_stream())
        except self.cupy.cuda.runtime.CUDARuntimeError as e:
            # NOTE: a launch needs a little device memory of its own; the default pool may be holding
            # all that is left, cached from a large uncaptured step (a server's first prefill of a shape)
            if "cudaErrorMemoryAllocation" not in str(e):
                raise
            self.cupy.get_default_memory_pool().free_all_blocks()
            graph.launch(self.cupy.cuda.get_current_stream())
