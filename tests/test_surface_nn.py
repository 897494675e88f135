"""nn modules and losses that PyTorch scripts use, against PyTorch CPU with the same weights:
outputs and gradients of the inputs and parameters."""
import numpy as np
import pytest
import torch

import tracegrad as tg
from tests.torch_compare import close, copy_weights

# NOTE: matmul-heavy modules run through numpy's BLAS vs PyTorch's; fp32 rounding differs a little
RTOL, ATOL = 1e-4, 1e-5


def _input(shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return tg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _check(ours, theirs, args, grads_of=()):
    """Same outputs (first tensor of a tuple), same gradients of the inputs and parameters."""
    copy_weights(ours, theirs)
    y, yt = ours(*args[0]), theirs(*args[1])
    y = y[0] if isinstance(y, tuple) else y
    yt = yt[0] if isinstance(yt, tuple) else yt
    close(y, yt, RTOL, ATOL)
    w = np.random.default_rng(7).standard_normal(tuple(yt.shape)).astype(np.float32)
    (y * tg.tensor(w)).sum().backward()
    (yt * torch.tensor(w)).sum().backward()
    for a, at in zip(args[0], args[1]):
        if isinstance(a, tg.Tensor) and a.requires_grad:
            close(a.grad, at.grad, RTOL, ATOL)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        close(p.grad, tp[name].grad, RTOL, ATOL)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent(kind, bidirectional):
    tg.manual_seed(0)
    ours = getattr(tg.nn, kind)(3, 4, num_layers=2, batch_first=True, bidirectional=bidirectional)
    theirs = getattr(torch.nn, kind)(3, 4, num_layers=2, batch_first=True, bidirectional=bidirectional)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x, xt = _input((2, 5, 3))
    _check(ours, theirs, ((x,), (xt,)))
    out, h = ours(x)
    out_t, h_t = theirs(xt)
    close(h[0] if kind == "LSTM" else h, h_t[0] if kind == "LSTM" else h_t, RTOL, ATOL)


def test_lstm_cell_and_unbatched():
    ours, theirs = tg.nn.LSTMCell(3, 4), torch.nn.LSTMCell(3, 4)
    x, xt = _input((2, 3))
    _check(ours, theirs, ((x,), (xt,)))
    ours2, theirs2 = tg.nn.GRU(3, 4), torch.nn.GRU(3, 4)
    copy_weights(ours2, theirs2)
    x, xt = _input((6, 3), 1)
    close(ours2(x)[0], theirs2(xt)[0], RTOL, ATOL)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention(batch_first):
    ours = tg.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    q, qt = _input((3, 4, 8) if batch_first else (4, 3, 8))         # N=3, L=4
    kv, kvt = _input((3, 5, 8) if batch_first else (5, 3, 8), 1)    # S=5
    mask = np.triu(np.ones((4, 5), bool), 1)
    pad = np.zeros((3, 5), bool)
    pad[0, -1] = True
    args = ((q, kv, kv, tg.tensor(pad), True, tg.tensor(mask)),
            (qt, kvt, kvt, torch.tensor(pad), True, torch.tensor(mask)))
    _check(ours, theirs, args)
    copy_weights(ours, theirs)
    close(ours(*args[0])[1], theirs(*args[1])[1], RTOL, ATOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_and_full(norm_first):
    tg.manual_seed(0)
    layer = tg.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
    tlayer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
    ours, theirs = tg.nn.TransformerEncoder(layer, 2), torch.nn.TransformerEncoder(tlayer, 2,
                                                                                     enable_nested_tensor=False)
    x, xt = _input((2, 5, 8))
    m = tg.nn.Transformer.generate_square_subsequent_mask(5)
    mt = torch.nn.Transformer.generate_square_subsequent_mask(5)
    close(m, mt, 0, 0)
    _check(ours, theirs, ((x, m), (xt, mt)))
    full = tg.nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
    tfull = torch.nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
    s, st = _input((2, 5, 8), 2)
    t, tt = _input((2, 3, 8), 3)
    _check(full, tfull, ((s, t), (st, tt)))


LOSSES = [
    ("BCEWithLogitsLoss", {}, lambda x: x, "prob"),
    ("BCEWithLogitsLoss", {"reduction": "sum"}, lambda x: x, "prob"),
    ("BCELoss", {}, lambda x: x.sigmoid(), "prob"),
    ("SmoothL1Loss", {"beta": 0.5}, lambda x: x, "real"),
    ("HuberLoss", {"delta": 0.7}, lambda x: x, "real"),
    ("KLDivLoss", {"reduction": "batchmean"}, lambda x: x.log_softmax(-1), "dist"),
]


@pytest.mark.parametrize("name,kw,pre,tgt", LOSSES)
def test_losses(name, kw, pre, tgt):
    x, xt = _input((4, 6))
    rng = np.random.default_rng(3)
    y = {"prob": rng.uniform(0, 1, (4, 6)), "real": rng.standard_normal((4, 6)) * 2,
         "dist": rng.dirichlet(np.ones(6), 4)}[tgt].astype(np.float32)
    loss = getattr(tg.nn, name)(**kw)(pre(x), tg.tensor(y))
    lt = getattr(torch.nn, name)(**kw)(pre(xt), torch.tensor(y))
    close(loss, lt, 1e-5, 1e-6)
    loss.backward()
    lt.backward()
    close(x.grad, xt.grad, 1e-5, 1e-6)


def test_bce_with_logits_pos_weight_and_extremes():
    x, xt = _input((3, 4))
    x2, xt2 = (x * 50), (xt * 50)                 # large logits: the stable form does not overflow
    y = np.random.default_rng(0).uniform(0, 1, (3, 4)).astype(np.float32)
    pw = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    close(tg.nn.BCEWithLogitsLoss(pos_weight=tg.tensor(pw))(x2, tg.tensor(y)),
          torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw))(xt2, torch.tensor(y)), 1e-5, 1e-5)


@pytest.mark.parametrize("name,kw", [("Softplus", {"beta": 2.0, "threshold": 5.0}), ("Hardtanh", {"min_val": -0.5}),
                                     ("ReLU6", {}), ("ELU", {"alpha": 0.7}), ("Mish", {}), ("Hardswish", {}),
                                     ("LogSigmoid", {}), ("GLU", {})])
def test_activations(name, kw):
    x, xt = _input((4, 6))
    y, yt = getattr(tg.nn, name)(**kw)(x * 4), getattr(torch.nn, name)(**kw)(xt * 4)
    close(y, yt, 1e-5, 1e-6)
    y.sum().backward()
    yt.sum().backward()
    close(x.grad, xt.grad, 1e-5, 1e-6)


def test_parameter_list_and_dict():
    pl = tg.nn.ParameterList([tg.nn.Parameter(tg.ones(2)), tg.zeros(3)])
    pl.append(tg.nn.Parameter(tg.ones(1)))
    assert len(pl) == 3 and [p.shape for p in pl] == [(2,), (3,), (1,)]
    assert list(pl.state_dict()) == ["0", "1", "2"] and len(list(pl.parameters())) == 3
    pd = tg.nn.ParameterDict({"a": tg.nn.Parameter(tg.ones(2))})
    pd["b"] = tg.nn.Parameter(tg.zeros(1))
    assert list(pd.keys()) == ["a", "b"] and sorted(pd.state_dict()) == ["a", "b"]

    class M(tg.nn.Module):
        def __init__(self):
            super().__init__()
            self.ps = tg.nn.ParameterList([tg.nn.Parameter(tg.ones(2)) for _ in range(2)])
    assert [n for n, _ in M().named_parameters()] == ["ps.0", "ps.1"]
