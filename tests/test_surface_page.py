"""docs/supported.md is what tracegrad.surface renders from the code; names outside the subset
raise an error that points to it and names the nearest supported name."""
import os

import pytest

import tracegrad as tg
from tracegrad import surface

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_page_matches_code():
    with open(os.path.join(ROOT, surface.PAGE)) as f:
        page = f.read()
    assert page == surface.render(), ("docs/supported.md is stale; regenerate it with "
                                      "`python -m tracegrad.surface > docs/supported.md`")


def test_page_lists_the_surface():
    s = surface.sections()
    assert {"cumsum", "save", "load", "einsum", "compile"} <= set(s["torch (tracegrad)"])
    assert {"LSTM", "MultiheadAttention", "Linear"} <= set(s["torch.nn modules"])
    assert {"repeat_interleave", "sort", "__format__"} <= set(s["Tensor methods and attributes"])
    assert {"matmul", "gather"} <= set(s["IR primitives"])
    assert "OneCycleLR" in s["torch.optim.lr_scheduler"] and "RMSprop" in s["torch.optim"]


@pytest.mark.parametrize("get,where,near", [
    (lambda: tg.cumsun, "tracegrad.cumsun", "tracegrad.cumsum"),
    (lambda: tg.nn.LayerNorn, "tracegrad.nn.LayerNorn", "tracegrad.nn.LayerNorm"),
    (lambda: tg.nn.functional.softmx, "tracegrad.nn.functional.softmx", "tracegrad.nn.functional.softmax"),
    (lambda: tg.ones(2).unsqeeze, "Tensor.unsqeeze", "Tensor.unsqueeze"),
])
def test_missing_name_error(get, where, near):
    with pytest.raises(AttributeError) as e:
        get()
    msg = str(e.value)
    assert where in msg and f"did you mean {near}" in msg and "docs/supported.md" in msg


def test_hasattr_still_false_for_private_names():
    assert not hasattr(tg, "__wrapped__") and not hasattr(tg.ones(1), "_fields")
