"""Recurrent layers with PyTorch's parameters and gate order: `RNN` (tanh/relu), `LSTM` (i, f, g,
o), `GRU` (r, z, n), multi-layer and bidirectional, plus the one-step `RNNCell`, `LSTMCell`,
`GRUCell`.

    lstm = nn.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
    out, (h_n, c_n) = lstm(x)        # out [N, T, 16]; h_n, c_n [2, N, 16]

The time loop is Python: eagerly it runs step by step; inside `@tg.compile` it unrolls into the
graph (one trace per sequence length). The input projection of all steps is one matmul.
"""
from __future__ import annotations

import math

from ..creation import empty, zeros
from ..functions import cat, stack
from . import functional as F, init
from .module import Module, Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _cell(mode: str, gi, h, c, w_hh, b_hh):
    """One step: gi = x W_ih^T + b_ih (precomputed); returns (h', c')."""
    gh = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c.tanh(), c
    if mode == "GRU":
        ir, iz, inn = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = (ir + hr).sigmoid(), (iz + hz).sigmoid()
        n = (inn + r * hn).tanh()
        return (1.0 - z) * n + z * h, None
    pre = gi + gh
    return (pre.tanh() if mode == "RNN_TANH" else pre.relu()), None


class RNNBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None):
        super().__init__()
        if proj_size:
            raise NotImplementedError("LSTM(proj_size=...) is not supported")
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, float(dropout), bidirectional
        dirs = 2 if bidirectional else 1
        gate = _GATES[mode] * hidden_size
        kw = dict(device=device, dtype=dtype)
        self._names = []
        for layer in range(num_layers):
            for d in range(dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                in_size = input_size if layer == 0 else hidden_size * dirs
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                setattr(self, names[0], Parameter(empty(gate, in_size, **kw)))
                setattr(self, names[1], Parameter(empty(gate, hidden_size, **kw)))
                if bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    setattr(self, names[2], Parameter(empty(gate, **kw)))
                    setattr(self, names[3], Parameter(empty(gate, **kw)))
                self._names.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def _weights(self, layer: int, d: int):
        names = self._names[layer * (2 if self.bidirectional else 1) + d]
        ws = [getattr(self, n) for n in names]
        return ws if self.bias else ws + [None, None]

    def forward(self, input, hx=None):
        unbatched = input.ndim == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)  # [T, N, I]
        t_len, n = x.shape[0], x.shape[1]
        dirs = 2 if self.bidirectional else 1
        lstm = self.mode == "LSTM"
        if hx is None:
            h0 = zeros(self.num_layers * dirs, n, self.hidden_size, dtype=x.dtype, device=x.device)
            hx = (h0, h0) if lstm else h0
        elif unbatched:
            hx = tuple(h.unsqueeze(1) for h in hx) if lstm else hx.unsqueeze(1)
        h_all, c_all = (hx if lstm else (hx, None))
        h_out, c_out = [], []
        for layer in range(self.num_layers):
            outs = []
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, d)
                k = layer * dirs + d
                h, c = h_all[k], (c_all[k] if lstm else None)
                gi = F.linear(x, w_ih, b_ih)                     # [T, N, gate]: all steps at once
                steps = range(t_len - 1, -1, -1) if d else range(t_len)
                ys = [None] * t_len
                for t in steps:
                    h, c = _cell(self.mode, gi[t], h, c, w_hh, b_hh)
                    ys[t] = h
                outs.append(stack(ys, 0))
                h_out.append(h)
                c_out.append(c)
            x = outs[0] if dirs == 1 else cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = x.squeeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        h_n = stack(h_out, 0)
        c_n = stack(c_out, 0) if lstm else None
        if unbatched:
            h_n = h_n.squeeze(1)
            c_n = c_n.squeeze(1) if lstm else None
        return (out, (h_n, c_n)) if lstm else (out, h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh", **kwargs):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity {nonlinearity!r}; select from 'tanh' or 'relu'")
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, num_layers, **kwargs)
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs):
        super().__init__("LSTM", input_size, hidden_size, num_layers, **kwargs)


class GRU(RNNBase):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs):
        super().__init__("GRU", input_size, hidden_size, num_layers, **kwargs)


class _CellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        gate = _GATES[mode] * hidden_size
        kw = dict(device=device, dtype=dtype)
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        self.weight_ih = Parameter(empty(gate, input_size, **kw))
        self.weight_hh = Parameter(empty(gate, hidden_size, **kw))
        self.bias_ih = Parameter(empty(gate, **kw)) if bias else None
        self.bias_hh = Parameter(empty(gate, **kw)) if bias else None
        stdv = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def forward(self, input, hx=None):
        unbatched = input.ndim == 1
        x = input.unsqueeze(0) if unbatched else input
        zero = zeros(x.shape[0], self.hidden_size, dtype=x.dtype, device=x.device)
        lstm = self.mode == "LSTM"
        if hx is None:
            hx = (zero, zero) if lstm else zero
        elif unbatched:
            hx = tuple(h.unsqueeze(0) for h in hx) if lstm else hx.unsqueeze(0)
        h, c = hx if lstm else (hx, None)
        h, c = _cell(self.mode, F.linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh, self.bias_hh)
        if unbatched:
            h, c = h.squeeze(0), (c.squeeze(0) if lstm else None)
        return (h, c) if lstm else h


class RNNCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", **kw):
        super().__init__("RNN_" + nonlinearity.upper(), input_size, hidden_size, bias, **kw)


class LSTMCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kw):
        super().__init__("LSTM", input_size, hidden_size, bias, **kw)


class GRUCell(_CellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, **kw):
        super().__init__("GRU", input_size, hidden_size, bias, **kw)
