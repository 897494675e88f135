"""The debug switches: TRACEGRAD_DEBUG levels print compile events and graphs, TRACEGRAD_DUMP writes
every stage, the generated source and a DOT graph."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import tracegrad as tg

STEP = """
import tracegrad as tg
w = tg.randn(8, 4, requires_grad=True)
@tg.compile
def step(x):
    loss = (x @ w).tanh().sum()
    loss.backward()
    return loss
step(tg.randn(2, 8))
"""


def _run(env):
    return subprocess.run([sys.executable, "-c", STEP], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, check=True)


def test_debug_levels_print_compile_events_and_graphs():
    one = _run({"TRACEGRAD_DEBUG": "1"}).stderr
    assert "[tracegrad:compile] step#0 (first call)" in one and "# tracegrad IR" not in one
    two = _run({"TRACEGRAD_DEBUG": "2"}).stderr
    assert "# tracegrad IR | step#0 | stage 0: traced" in two and "ops.matmul(x, w)" in two
    code = _run({"TRACEGRAD_LOGS": "output_code"}).stderr
    assert re.search(r"# tracegrad (cpu|numpy) \| step#0", code) and "[tracegrad:compile]" not in code


def test_dump_writes_every_stage_source_and_dot(tmp_path):
    step = tg.compile(lambda x: (x.exp() * 2).sum(), dump=str(tmp_path))
    step(tg.ones(3))
    names = sorted(p.name for p in tmp_path.iterdir())
    for want in ("0.traced.py", "3.optimized.py", "forward.py", "backward.py", "kernels.py", ".dot"):
        assert any(n.endswith(want) for n in names), (want, names)
    traced = next(p for p in tmp_path.iterdir() if p.name.endswith("0.traced.py")).read_text()
    assert traced.startswith("# tracegrad IR | _lambda_#0 | stage 0: traced")
