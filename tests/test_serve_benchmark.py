"""benchmarks/serve.py's CPU smoke mode runs end to end on tiny models and prints both parts (slow:
about a minute on two cores, so CI skips it; the GPU run is `python benchmarks/serve.py --quick`)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_serve_benchmark_cpu_smoke_mode():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "serve.py"), "--device", "cpu", "--quick"],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    for batch in (1, 16):
        assert any(line.split()[:4] == ["tracegrad", "LLM", "(paged)", str(batch)] for line in out.splitlines()), out
    assert "output tokens/s" in out
