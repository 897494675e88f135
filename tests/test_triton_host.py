"""The launch layer around Triton (runtime/triton_host.py) apart from any kernel: what it keeps out
of a first call."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("triton")


def test_torch_unseen_fails_a_new_torch_import_and_then_lets_it_be():
    """Triton's specializer would import torch; within `torch_unseen` that import fails at once,
    and afterwards torch imports as usual. A torch already imported is left alone."""
    code = """
import sys
from tracegrad.runtime.triton_host import torch_unseen
with torch_unseen():
    with torch_unseen():
        pass
    try:
        import torch
        raise SystemExit("torch imported inside")
    except ImportError:
        pass
assert "torch" not in sys.modules
import torch
with torch_unseen():
    import torch as again
assert again is torch
print("ok")
"""
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
