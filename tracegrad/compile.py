"""`tg.compile`: trace a step once per input signature, run the pass pipeline, generate code,
and replay it on later calls, writing state updates back into the tensors they came from.

    trace -> (dp) -> simplify -> decompose -> optimized (-> bucketed) -> codegen

Each compiled signature is an `Entry`; `step.ir(stage)` shows any stage of the latest one.
"""
from __future__ import annotations

import functools
import inspect
import os
import time
import warnings

from . import amp, debug, pytree
from .dispatch import grad_enabled
from .ir.graph import Graph
from .ir.passes import PassManager, phase_view
from .ir.passes.fusion import explain_kernels, format_fused
from .ir.printer import format_graph
from .errors import UnsupportedError
from .compiled_entry import Entry, guards_of, shard_layouts, state_io
from .compiled_grad import CompiledBackward
from .distributed import Mesh, current_comm
from .ir.passes.parallel import Plan
from .ir.passes.parallel.schedule import SCHEDULES
from .pipeline import choose_backend, lower, parallelize
from .bounds import checks_of
from .tensor import Tensor
from .trace import ArgSource, GradSource, StateSource, Trace
from .compile_module import compile_module, torch_options
from .nn.module import Module
from .ir.passes.parallel.explain import collective_lines, plan_lines, state_lines
from .distributed.checks import check_same_collectives

MAX_RETRACES = 8            # retraces before a warning (one per kind of reason)
CACHE_SIZE_LIMIT = 64       # compilations kept per function; then eager or an error (on_cache_limit)
RETRACE_FIX = ("each new input shape compiles the step anew; give it a few fixed shapes: drop_last=True on the "
               "DataLoader, padding to a fixed length, or bucketing lengths into a few sizes (tracegrad compiles "
               "static shapes; dynamic= is accepted but does not make them symbolic)")


class RecompileLimitError(UnsupportedError):
    """A compiled function reached its cache_size_limit with on_cache_limit="error"."""


def _reason_kind(reason: str) -> str:
    """The reason without its shapes: 'x: f32[3] -> f32[4]; y: ...' -> 'x, y'; one warning per kind."""
    parts = [p.split(":")[0].strip() for p in reason.split("; ") if "->" in p]
    return ", ".join(parts) if parts else reason


def _leaf_key(x):
    if isinstance(x, Tensor):
        return ("T", x._type, x.requires_grad)
    if isinstance(x, (int, float, bool, str, type(None))):
        return ("S", type(x).__name__, x)
    return ("O", type(x).__name__, id(x))


def _describe(key) -> str:
    kind = key[0]
    if kind == "T":
        return f"tensor {key[1]}" + (" requiring grad" if key[2] else "")
    if kind == "S":
        return f"{key[1]} {key[2]!r}"
    return f"{key[1]} object"


class CompiledFunction:
    """What `@tg.compile` returns: call it like the function; inspect it with `.ir(stage)`."""

    def __init__(self, fn, backend: str = "auto", mesh=None, dump: str | None = None, donate=(), plan=None,
                 microbatches: int | None = None, schedule: str = "1f1b",
                 cache_size_limit: int = CACHE_SIZE_LIMIT, on_cache_limit: str = "eager"):
        if on_cache_limit not in ("eager", "error"):
            raise ValueError(f"on_cache_limit must be 'eager' or 'error', got {on_cache_limit!r}")
        self.cache_size_limit, self.on_cache_limit = int(cache_size_limit), on_cache_limit
        self._warned: set[str] = set()
        if backend not in ("auto", "numpy", "cpu", "triton"):
            raise ValueError(f"backend must be 'auto', 'numpy', 'cpu' or 'triton', got {backend!r}")
        if mesh is not None and not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a tg.Mesh, got {type(mesh).__name__}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.fn, self.backend, self.mesh, self.dump = fn, backend, mesh, dump
        self.plan = Plan.of(plan)
        self.microbatches, self.schedule = microbatches or (mesh.pp if mesh is not None else 1), schedule
        self.donate = (donate,) if isinstance(donate, (str, int)) else tuple(donate)
        self.entries: list[Entry] = []
        self.retrace_reasons: list[str] = []
        functools.update_wrapper(self, fn)

    def __get__(self, obj, objtype=None):
        return self if obj is None else functools.partial(self, obj)

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        leaves, spec = pytree.flatten((args, kwargs), is_leaf=lambda x: isinstance(x, Tensor))
        comm = current_comm()     # each rank passes its local batch (DDP's semantics)
        if self.mesh is not None and comm.world_size != self.mesh.size:
            raise RuntimeError(f"{self.__name__} is compiled for {self.mesh} ({self.mesh.size} ranks), but this "
                               f"process is rank {comm.rank} of {comm.world_size}; run it under "
                               "`tracegrad launch -n N` or tg.distributed.run_local with that many ranks")
        key = (spec, tuple(_leaf_key(x) for x in leaves), grad_enabled(), amp.autocast_dtype(),
               (self.backend, id(comm)))
        for e in reversed(self.entries):
            if e.key == key and e.guards_hold(leaves):
                return e.run(leaves)
        reason = self._reason(key, leaves)
        if len(self.entries) >= self.cache_size_limit:
            return self._over_limit(reason, args, kwargs)
        entry = self._compile(args, kwargs, leaves, key, reason, comm)
        return entry.run(leaves)

    def _over_limit(self, reason: str, args, kwargs):
        """A new signature after `cache_size_limit` compilations: run eagerly, or raise."""
        msg = (f"{self.__name__} reached cache_size_limit={self.cache_size_limit} compilations (latest reason: "
               f"{reason}); {RETRACE_FIX}")
        if self.on_cache_limit == "error":
            raise RecompileLimitError(msg + "; or raise the limit: tg.compile(fn, cache_size_limit=N)")
        if "__limit__" not in self._warned:
            self._warned.add("__limit__")
            warnings.warn(msg + "; new signatures now run eagerly (on_cache_limit='error' raises instead)",
                          stacklevel=3)
        return self.fn(*args, **kwargs)

    def _reason(self, key, leaves) -> str:
        if not self.entries:
            return "first call"
        last = self.entries[-1]
        if last.key == key:
            return last.failed_guard(leaves)
        (s0, l0, g0, a0, _), (s1, l1, g1, a1, _) = last.key, key
        if s0 != s1:
            return "the arguments' structure changed"
        if g0 != g1:
            return f"grad mode changed to {g1}"
        if a0 != a1:
            return f"autocast changed to {a1}"
        names = self._arg_names(len(l1))
        diffs = [f"{names[i]}: {_describe(a)} -> {_describe(b)}" for i, (a, b) in enumerate(zip(l0, l1)) if a != b]
        return "; ".join(diffs) or "a new signature"

    def _arg_names(self, n) -> list[str]:
        try:
            params = list(inspect.signature(self.fn).parameters)
        except (TypeError, ValueError):
            params = []
        return [params[i] if i < len(params) else f"arg{i}" for i in range(n)]

    def _donated_leaves(self, args, kwargs, leaves) -> dict[int, str]:
        """Leaf index -> argument name of every tensor in the arguments named by `donate`."""
        if not self.donate:
            return {}
        names = self._arg_names(len(args))
        parts = [(names[i], i, a) for i, a in enumerate(args)] + [(k, k, v) for k, v in kwargs.items()]
        out, start, found = {}, 0, set()
        for name, pos, part in parts:
            n = len(pytree.flatten(part, is_leaf=lambda x: isinstance(x, Tensor))[0])
            if name in self.donate or pos in self.donate:
                found.update((name, pos))
                out.update((i, name) for i in range(start, start + n) if isinstance(leaves[i], Tensor))
            start += n
        missing = [d for d in self.donate if d not in found]
        if missing:
            raise ValueError(f"{self.__name__}: donate={self.donate!r} names no argument of this call: "
                             f"{missing} (arguments: {[p[0] for p in parts]})")
        return out

    def _differentiable(self, tr, leaves, outputs, title, donated):
        """(inputs, outputs) positions to differentiate when a call's outputs may be: grad is on,
        the step ran no backward of its own, and a tensor it reads requires grad; else None."""
        if not grad_enabled() or tr.grad_log:
            return None
        diff_out = [i for i, t in enumerate(outputs) if t.requires_grad]
        diff_in = [j for j, src in enumerate(tr.sources)
                   if not isinstance(src, GradSource) and src.read(leaves).requires_grad]
        if not (diff_in and diff_out):
            return None
        if donated:
            raise UnsupportedError(f"{title}: donate= with outputs that require grad: the backward recomputes "
                                   "the step from its inputs, so they cannot be given away")
        return diff_in, diff_out

    # -- compiling --------------------------------------------------------------------------
    def _compile(self, args, kwargs, leaves, key, reason, comm=None) -> Entry:
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in getattr(self.fn, "__name__", "step")) or "step"
        title = f"{name}#{len(self.entries)}"
        if self.entries:
            self.retrace_reasons.append(reason)
            debug.log("recompiles", "retracing %s: %s", name, reason)
            kind = _reason_kind(reason)
            if len(self.retrace_reasons) > MAX_RETRACES and kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(f"{name} was traced {len(self.entries) + 1} times; latest reason: {reason} (recent: "
                              + " | ".join(self.retrace_reasons[-3:]) + f"). {RETRACE_FIX}. This warning is shown "
                              "once per kind of reason", stacklevel=3)
        donated = self._donated_leaves(args, kwargs, leaves)
        t0 = time.perf_counter()
        tr = Trace(name)
        names = self._arg_names(len(leaves))
        with tr:
            for i, x in enumerate(leaves):
                if isinstance(x, Tensor):
                    tr.bind_arg(x, names[i] if i < len(names) else f"arg{i}", i)
            out = self.fn(*args, **kwargs)
            out_leaves, out_spec = pytree.flatten(out, is_leaf=lambda x: isinstance(x, Tensor))
            tensors = [x for x in out_leaves if isinstance(x, Tensor)]
            graph, plan = tr.finish(tensors)
        if donated:
            graph = graph.with_(meta={"donated": tuple(
                v.name for v, src in zip(graph.inputs, tr.sources) if isinstance(src, ArgSource) and src.index in donated)})
        backward = self._differentiable(tr, leaves, tensors, title, donated)
        if backward is None and (self.mesh is None or self.mesh.size == 1):   # NOTE: parallel passes re-plan state
            graph = graph.with_(meta={"updates": _state_updates(graph, tr.sources, plan, len(tensors))})
        guards = guards_of(tr)   # after the trace put .grad attributes back as they were
        ms = (time.perf_counter() - t0) * 1e3
        stages = PassManager(title)
        graph = stages.record("traced", graph, ms)
        partitioned = self.mesh is not None and (max(self.mesh.tp, self.mesh.pp, self.mesh.cp) > 1
                                                 or self.microbatches > 1)
        if partitioned and backward is not None:
            raise UnsupportedError(f"{title}: tensor, pipeline and context parallelism need the backward inside "
                                   "the step (call loss.backward() in it), not differentiable outputs")
        batch = tuple(v.name for v, src in zip(graph.inputs, tr.sources) if isinstance(src, ArgSource))
        if partitioned:
            graph = graph.with_(meta={**graph.meta, "state_io": state_io(graph, tr.sources, plan, len(tensors))})
        graph = parallelize(graph, stages, self.mesh, comm.rank, tr.parallel_plans(), batch, self.plan,
                            self.microbatches, self.schedule)
        backend = choose_backend(self.backend, graph, retrace=bool(self.entries))
        if backward is not None:
            backward = CompiledBackward(graph, *backward, backend, title, comm)
        graph, program = lower(graph, stages, backend, comm)
        if len(graph.meta.get("dp_group", ())) > 1:     # a rank that traced another graph fails here, not later
            check_same_collectives(graph, comm, graph.meta["dp_group"], title)
        entry = Entry(key, title, list(tr.sources), plan, guards, len(tensors), out_spec, out_leaves,
                      [v.type for v in graph.outputs], stages, program,
                      (time.perf_counter() - t0) * 1e3, donated, backward, list(tr.on_backward_call),
                      # NOTE: Triton steps check indices in their kernels (runtime/index_flags.py)
                      index_checks=checks_of(stages["traced"]) if backend != "triton" else [],
                      shards=shard_layouts(stages, self.mesh, comm))
        self.entries.append(entry)
        debug.log("compile", "%s (%s): %d ops traced, %d after optimization, %.1f ms", title, reason,
                  len(stages["traced"].nodes), len(graph.nodes), entry.compile_ms)
        _report(self, entry)
        return entry

    # -- inspecting -------------------------------------------------------------------------
    def ir(self, stage: str = "optimized", index: int = -1) -> str:
        """Text of one stage of the latest (or `index`-th) compiled signature:
        traced, forward, backward, update, simplify, decompose, optimized, fused (Triton), kernels.
        "backward" is the backward phase of the step, or, for a step whose outputs are differentiated
        after the call, the optimized graph of its compiled backward."""
        if not self.entries:
            raise RuntimeError(f"{self.__name__} has not been compiled yet: call it once first")
        e = self.entries[index]
        if stage == "kernels":
            return e.program.source
        if stage == "fused":
            return format_fused(e.stages["fused"])
        if stage == "backward" and e.backward is not None:   # outputs differentiated outside the step
            return format_graph(e.backward.graph("optimized"))
        if stage in ("forward", "backward", "update"):
            return format_graph(phase_view(e.stages["traced"], stage))
        return format_graph(e.stages[stage])

    def graphs(self, index: int = -1) -> dict[str, Graph]:
        e = self.entries[index]
        out = {s.name: s.graph for s in e.stages.stages}
        for ph in ("forward", "backward", "update"):
            out[ph] = phase_view(out["traced"], ph)
        return out

    def explain(self, index: int = -1) -> str:
        """Stages with their times, then each kernel of the step: kind, ops, bytes, flops, the user's
        lines, and, once the step was profiled (`profile()` or TRACEGRAD_PROFILE=1), its time and
        share of the step."""
        e = self.entries[index]
        g = e.stages["optimized"]
        lines = [f"{e.title}: {len(g.nodes)} ops, compiled in {e.compile_ms:.1f} ms, called {e.calls} times"]
        if getattr(e.program, "graphed", None) is not None:
            lines.append("  " + e.program.graphed.describe())
        for s in e.stages.stages:
            lines.append(f"  stage {s.name:<10} {len(s.graph.nodes):>5} ops  {s.ms:7.1f} ms")
        parallel = [s.graph for s in e.stages.stages if s.name in ("tp", "cp", "pp")]
        lines += plan_lines(parallel[-1]) if parallel else []
        lines += state_lines(e.stages["traced"], e.stages.stages[-1].graph)
        lines += collective_lines(e.stages.stages[-1].graph, self.mesh)
        if any(s.name == "fused" for s in e.stages.stages):
            lines += explain_kernels(e.stages["fused"], getattr(e.program, "launch_ms", None) or None)
        return "\n".join(lines)

    def profile(self, *args, **kwargs):
        """Call the step once with every launch timed (CUDA events on the GPU): `explain()` then
        shows each kernel's milliseconds and share of the step, slowest first in `top`. The call is a
        real step (an optimizer step updates the weights). Returns the step's result.

            loss = step(x, y)                  # compile
            step.profile(x, y)
            print(step.explain())
        """
        if not self.entries:
            self(*args, **kwargs)
        prog = self.entries[-1].program
        if not hasattr(prog, "profiling"):
            raise NotImplementedError("profile() times Triton programs (backend='triton' or CUDA tensors)")
        saved, prog.profiling = prog.profiling, True
        try:
            return self(*args, **kwargs)
        finally:
            prog.profiling = saved


def _state_updates(graph: Graph, sources, plan, n_user: int) -> dict[int, int]:
    """Output position -> input position of each tensor from outside the step whose data the step
    replaces (parameters and optimizer state after `opt.step()`): a backend may write the new value
    over the old buffer, as PyTorch's in-place updates do."""
    state = {id(src.tensor): j for j, src in enumerate(sources) if isinstance(src, StateSource)}
    pairs, k = {}, n_user
    for wb in plan:
        if wb.kind == "grad_none":
            continue
        j = state.get(id(wb.ref)) if wb.kind == "data" and not isinstance(wb.ref, int) else None
        if j is not None and graph.outputs[k].type == graph.inputs[j].type:
            pairs[k] = j
        k += 1
    return pairs


def _report(fn: CompiledFunction, e: Entry) -> None:
    if debug.enabled("graph"):
        debug.log("graph", "%s\n%s", e.title, fn.ir("traced"))
        debug.log("graph", "%s", fn.ir("optimized"))
    if debug.enabled("output_code"):
        debug.log("output_code", "%s", e.program.source)
    if debug.enabled("passes"):
        debug.log("passes", "%s", fn.explain())
    target = fn.dump or debug.dump_dir()
    if target:
        write_dump(fn, e, target)


def write_dump(fn: CompiledFunction, e: Entry, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    base = os.path.join(target, e.title.replace("#", "_"))
    for i, s in enumerate(e.stages.stages):
        with open(f"{base}.{i}.{s.name}.py", "w") as f:
            f.write(format_graph(s.graph) + "\n")
    for ph in ("forward", "backward"):
        with open(f"{base}.{ph}.py", "w") as f:
            f.write(format_graph(phase_view(e.stages["traced"], ph)) + "\n")
    with open(f"{base}.kernels.py", "w") as f:
        f.write(e.program.source)
    with open(f"{base}.dot", "w") as f:
        f.write(e.stages["optimized"].to_dot() + "\n")


def compile(fn=None, *, backend="auto", donate=(), mesh=None, plan=None, microbatches: int | None = None,
            schedule: str = "1f1b", dump: str | None = None, mode=None, fullgraph: bool = False, dynamic=None,
            options=None, disable: bool = False, cache_size_limit: int = CACHE_SIZE_LIMIT,
            on_cache_limit: str = "eager"):
    """Compile a step: `@tg.compile` or `tg.compile(fn, backend="numpy")`; `tg.compile(model)`
    returns a module whose calls are compiled (see compile_module.py).

    `backend`: "auto" (Triton for CUDA tensors, "cpu" for CPU ones, or numpy without numba;
    TRACEGRAD_CPU_BACKEND=numpy or =tiered changes the CPU's), "numpy" (one numpy call per op: the
    readable reference), "cpu" (the fusion groups as numba-compiled loops, one pass over memory per
    group; compiles each distinct kernel once, before the first call, in worker processes, and
    caches it on disk) or "triton".

    `donate` names arguments (by name or position) whose buffers the caller gives up, as JAX's
    donate_argnums: the step may write its results over them (e.g. the cross-entropy gradient over
    the logits), and using them after the call raises `DonatedError`. torch.compile's `mode`,
    `fullgraph`, `dynamic`, `options` and `backend="inductor"` are accepted; `disable=True` returns
    `fn` itself. After `cache_size_limit` compilations a new signature runs eagerly
    (`on_cache_limit="eager"`, with one warning) or raises `RecompileLimitError` ("error").

    `mesh` (a `tg.Mesh`) runs the step on several ranks; `plan` overrides the parallel style of
    modules by path pattern (`{"*.k_proj": "replicate"}`, see `tracegrad.ir.passes.parallel.plan`);
    with pipeline stages (`mesh.pp > 1`) the batch is cut into `microbatches` (default: pp) run
    in the `schedule` "1f1b" or "afab"."""
    backend = torch_options(backend, mode, fullgraph, dynamic, options, disable)
    kw = dict(plan=plan, microbatches=microbatches, schedule=schedule, cache_size_limit=cache_size_limit,
              on_cache_limit=on_cache_limit)

    def make(f):
        if disable:
            return f
        if isinstance(f, Module):
            return compile_module(f, lambda g: CompiledFunction(g, backend, mesh, dump, donate, **kw))
        return CompiledFunction(f, backend, mesh, dump, donate, **kw)
    return make if fn is None else make(fn)


def last_graphs(fn: CompiledFunction) -> dict[str, Graph]:
    """Every stage of the latest compilation of `fn`, by name."""
    return fn.graphs()
