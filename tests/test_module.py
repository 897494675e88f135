"""The Module API against PyTorch's: naming, registration, state_dict, repr, modes, containers."""
import os
import sys

import numpy as np
import pytest
import torch

import tracegrad as tg
import tracegrad.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from torch_compare import close, copy_weights  # noqa: E402


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, d)
        self.register_buffer("scale", tg.ones(d))
        self.register_buffer("cache", tg.zeros(d), persistent=False)

    def forward(self, x):
        return x + self.fc(self.ln(x)).relu() * self.scale


class Net(nn.Module):
    def __init__(self, d=8, n=2):
        super().__init__()
        self.emb = nn.Embedding(11, d)
        self.blocks = nn.ModuleList([Block(d) for _ in range(n)])
        self.head = nn.ModuleDict({"proj": nn.Linear(d, 11, bias=False), "act": nn.Identity()})
        self.head.proj.weight = self.emb.weight      # weight tying

    def forward(self, idx):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.head["act"](self.head["proj"](x))


class TBlock(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = torch.nn.LayerNorm(d)
        self.fc = torch.nn.Linear(d, d)
        self.register_buffer("scale", torch.ones(d))
        self.register_buffer("cache", torch.zeros(d), persistent=False)


class TNet(torch.nn.Module):
    def __init__(self, d=8, n=2):
        super().__init__()
        self.emb = torch.nn.Embedding(11, d)
        self.blocks = torch.nn.ModuleList([TBlock(d) for _ in range(n)])
        self.head = torch.nn.ModuleDict({"proj": torch.nn.Linear(d, 11, bias=False), "act": torch.nn.Identity()})
        self.head.proj.weight = self.emb.weight


def test_module_tree_matches_torch():
    m, tm = Net(), TNet()
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in tm.named_parameters()]
    assert [n for n, _ in m.named_buffers()] == [n for n, _ in tm.named_buffers()]
    assert [n for n, _ in m.named_modules()] == [n for n, _ in tm.named_modules()]
    assert [n for n, _ in m.named_children()] == [n for n, _ in tm.named_children()]
    assert list(m.state_dict()) == list(tm.state_dict())
    assert repr(m).replace("Net", "TNet").replace("Block", "TBlock") == repr(tm)
    assert sum(p.numel() for p in m.parameters()) == sum(p.numel() for p in tm.parameters())
    assert m.get_submodule("blocks.1.fc") is m.blocks[1].fc
    assert isinstance(m.blocks[0].fc.weight, nn.Parameter) and m.blocks[0].fc.weight.requires_grad


def test_reprs_match_torch():
    pairs = [
        (nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(8, 2)),
         torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
                             torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.AdaptiveAvgPool2d(1),
                             torch.nn.Flatten(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))),
        (nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.GELU("tanh")]),
         torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)] + [torch.nn.GELU("tanh")])),
        (nn.Embedding(5, 3, padding_idx=0), torch.nn.Embedding(5, 3, padding_idx=0)),
        (nn.LayerNorm(4, bias=False), torch.nn.LayerNorm(4, bias=False)),
        (nn.RMSNorm(4), torch.nn.RMSNorm(4)),
        (nn.AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1)),
        (nn.Softmax(dim=-1), torch.nn.Softmax(dim=-1)),
    ]
    for a, b in pairs:
        assert repr(a) == repr(b)


def test_state_dict_round_trip_and_strictness():
    tg.manual_seed(7)
    m, m2 = Net(), Net()
    sd = m.state_dict()
    assert "blocks.0.cache" not in sd and "blocks.0.scale" in sd
    assert "head.proj.weight" in sd and "emb.weight" in sd
    w_before = m2.blocks[0].fc.weight
    res = m2.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert m2.blocks[0].fc.weight is w_before          # loaded in place: identity kept
    idx = tg.tensor([[1, 2, 3]])
    np.testing.assert_array_equal(m(idx).numpy(), m2(idx).numpy())
    # a snapshot does not follow later updates
    with tg.no_grad():
        m.blocks[0].fc.bias.add_(1.0)
    assert not np.array_equal(sd["blocks.0.fc.bias"].numpy(), m.blocks[0].fc.bias.numpy())
    bad = dict(sd)
    bad.pop("blocks.1.fc.bias")
    bad["extra"] = tg.zeros(1)
    with pytest.raises(RuntimeError, match="Missing key.*blocks.1.fc.bias"):
        m2.load_state_dict(bad)
    res = m2.load_state_dict(bad, strict=False)
    assert res.missing_keys == ["blocks.1.fc.bias"] and res.unexpected_keys == ["extra"]
    bad = dict(sd, **{"blocks.0.fc.weight": tg.zeros(3, 3)})
    with pytest.raises(RuntimeError, match="size mismatch for blocks.0.fc.weight"):
        m2.load_state_dict(bad)
    # torch loads tracegrad's state dict (through numpy) and the forward agrees
    tm = TNet()
    copy_weights(m, tm)
    tsd = tm.state_dict()
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), tsd[k].numpy())


def test_modes_apply_zero_grad_to_and_registration():
    m = Net()
    assert m.training and m.blocks[1].ln.training
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3
    m(tg.tensor([[1, 2]])).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(float(p.grad.abs().sum()) == 0 for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.to(tg.float64)
    assert all(p.dtype == tg.float64 for p in m.parameters())
    assert m.blocks[0].scale.dtype == tg.float64
    m.double().float()
    assert m.emb.weight.dtype == tg.float32
    m.blocks[0].register_parameter("extra", None)
    m.blocks[0].foo = nn.Parameter(tg.zeros(2))
    assert "blocks.0.foo" in dict(m.named_parameters())
    del m.blocks[0].foo
    assert "blocks.0.foo" not in dict(m.named_parameters())
    with pytest.raises(TypeError):
        m.blocks[0].fc.weight = tg.zeros(8, 8)      # a plain tensor cannot replace a parameter
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], nn.Linear) and len(seq[:2]) == 2
    assert seq(tg.randn(4, 2)).shape == (4, 1)


def test_compiled_step_names_state_and_module_paths():
    tg.manual_seed(8)
    m = Net()
    step = tg.compile(lambda idx: m(idx).sum())
    out = step(tg.tensor([[1, 2, 3]]))
    close(out, m(tg.tensor([[1, 2, 3]])).sum())
    ir = step.ir("traced")
    assert "blocks_0_fc_weight: f32[8, 8]" in ir and "emb_weight: f32[11, 8]" in ir
    assert "blocks.1.fc" in ir and "blocks.0.ln" in ir
