"""Comparing tracegrad with PyTorch CPU in tests: tensors across, closeness, weights across."""
from __future__ import annotations

import numpy as np
import torch

import tracegrad as tg

RTOL, ATOL = 1e-5, 1e-6


def tt(x, requires_grad=False):
    """tracegrad tensor -> torch tensor (a copy)."""
    return torch.tensor(np.array(x.numpy()), requires_grad=requires_grad)


def close(a, b, rtol=RTOL, atol=ATOL):
    a = a.numpy() if isinstance(a, tg.Tensor) else a
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol)


def copy_weights(tg_module, torch_module):
    sd = {k: torch.tensor(np.array(v.numpy())) for k, v in tg_module.state_dict().items()}
    torch_module.load_state_dict(sd)
