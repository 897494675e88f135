"""Which engine each fused CPU kernel runs (`runtime/cpu_choice.py`): measured at its first call,
recorded on disk and obeyed from the first call of every later process; and what happens to a
kernel numba cannot compile."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg

pytest.importorskip("numba")


def _softmax_tanh(x):
    return tg.nn.functional.softmax(tg.tanh(x) * 2.0, -1)


def test_each_kernel_runs_the_engine_recorded_for_it_from_its_first_call(tmp_path, monkeypatch):
    """A kernel's first call measures its loops and its numpy ops on its inputs, keeps the faster and
    records it on disk; a later process (here: the record read afresh) runs the recorded engine from
    its first call, so both compute the same bits on every call, and a recorded engine is obeyed."""
    from tracegrad.runtime import cpu_choice
    from tracegrad.runtime.cpu_kernels import Call
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_choice, "_KNOWN", {})
    x = tg.tensor(np.random.default_rng(3).normal(size=(64, 96)).astype(np.float32))
    want = tg.compile(_softmax_tanh, backend="numpy")(x).numpy()

    def run():
        step = tg.compile(_softmax_tanh, backend="cpu")
        outs = [step(x).numpy() for _ in range(3)]
        return outs, [k for k in step.entries[-1].program.kernels.values() if isinstance(k, Call)]
    first, calls = run()
    assert calls and all(c.engine in ("loops", "numpy") for c in calls)
    records = sorted((tmp_path / "cpu" / "choice").iterdir())
    assert len(records) == len(calls) and {r.read_text() for r in records} <= {"loops", "numpy"}
    for out in first:
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(cpu_choice, "_KNOWN", {})
    measured = []
    monkeypatch.setattr(cpu_choice, "measure", lambda *a: measured.append(a) or cpu_choice.measure(*a))
    again, calls_again = run()
    assert not measured and [c.engine for c in calls_again] == [c.engine for c in calls]
    assert all((a == b).all() for a, b in zip(again, first))           # the same bits, call for call
    for r in records:
        r.write_text("numpy")
    monkeypatch.setattr(cpu_choice, "_KNOWN", {})
    _, forced = run()
    assert all(c.engine == "numpy" for c in forced)


def test_ranks_that_measure_at_once_keep_the_first_record(tmp_path):
    """Two processes measuring one kernel at once both run what the first to record chose."""
    from tracegrad.runtime import cpu_choice
    assert cpu_choice.record("k1", "numpy", str(tmp_path)) == "numpy"
    cpu_choice._KNOWN.pop("k1")
    assert cpu_choice.record("k1", "loops", str(tmp_path)) == "numpy"
    assert (tmp_path / "choice" / "k1").read_text() == "numpy"
    assert not [p for p in (tmp_path / "choice").iterdir() if p.name.endswith(".tmp")]


def test_a_kernel_numba_refuses_runs_as_its_numpy_ops(tmp_path, monkeypatch):
    """When numba cannot compile a group's loops, the step warns, naming the kernel, and runs that
    group as its numpy ops."""
    import numba

    from tracegrad.runtime import cpu_kernels
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "_LOADED", {})
    monkeypatch.setenv("TRACEGRAD_COMPILE_WORKERS", "0")

    def refuse(self, sig):
        raise numba.core.errors.TypingError("no loops today")
    monkeypatch.setattr(numba.core.registry.CPUDispatcher, "compile", refuse)
    x = tg.tensor(np.random.default_rng(4).normal(size=(16, 24)).astype(np.float32))
    step = tg.compile(_softmax_tanh, backend="cpu")
    with pytest.warns(RuntimeWarning, match=r"the CPU loops of kernel \w+ did not compile \(TypingError: no loops"):
        got = step(x).numpy()
    np.testing.assert_allclose(got, tg.compile(_softmax_tanh, backend="numpy")(x).numpy(), rtol=1e-6, atol=1e-7)
    calls = [k for k in step.entries[-1].program.kernels.values() if isinstance(k, cpu_kernels.Call)]
    assert calls and all(c.engine == "numpy" for c in calls)


def test_a_home_that_cannot_be_written_caches_in_the_temp_directory(tmp_path, monkeypatch):
    """Compiled kernels and engine records need a folder that can be written; where the home has none
    (a read-only container, a service account), the cache moves to the temp directory."""
    import os
    import tempfile

    from tracegrad.runtime import cpu_kernels, kernel_cache
    monkeypatch.delenv("TRACEGRAD_CACHE_DIR", raising=False)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file" / "home"))           # under a file: no folder there
    assert kernel_cache.cache_dir() == os.path.join(tempfile.gettempdir(), f"tracegrad-cache-{os.getuid()}")
    assert cpu_kernels.cache_dir() == f"{kernel_cache.cache_dir()}/cpu"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kernel_cache.cache_dir() == str(tmp_path / "home" / ".cache" / "tracegrad")
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(tmp_path / "mine"))
    assert kernel_cache.cache_dir() == str(tmp_path / "mine")
