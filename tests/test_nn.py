"""tg.nn against PyTorch CPU: each layer's forward and gradients (same weights, copied through numpy),
the functional API, init, clipping, and BatchNorm's running statistics inside a compiled training
step. The Module API is in test_module.py."""
import math
import os
import sys

import numpy as np
import pytest
import torch

import tracegrad as tg
import tracegrad.nn as nn
import tracegrad.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from torch_compare import close, copy_weights, tt  # noqa: E402


# -- layers: forward and gradients ------------------------------------------------------------
LAYERS = [
    ("linear", lambda: nn.Linear(5, 7), lambda: torch.nn.Linear(5, 7), (3, 4, 5)),
    ("linear_nobias", lambda: nn.Linear(5, 7, bias=False), lambda: torch.nn.Linear(5, 7, bias=False), (6, 5)),
    ("layernorm", lambda: nn.LayerNorm(6), lambda: torch.nn.LayerNorm(6), (3, 4, 6)),
    ("layernorm_2d", lambda: nn.LayerNorm((4, 6)), lambda: torch.nn.LayerNorm((4, 6)), (3, 4, 6)),
    ("layernorm_noaffine", lambda: nn.LayerNorm(6, elementwise_affine=False),
     lambda: torch.nn.LayerNorm(6, elementwise_affine=False), (3, 6)),
    ("layernorm_nobias", lambda: nn.LayerNorm(6, bias=False), lambda: torch.nn.LayerNorm(6, bias=False), (3, 6)),
    ("rmsnorm", lambda: nn.RMSNorm(6), lambda: torch.nn.RMSNorm(6), (3, 4, 6)),
    ("rmsnorm_eps", lambda: nn.RMSNorm(6, eps=1e-5), lambda: torch.nn.RMSNorm(6, eps=1e-5), (3, 6)),
    ("gelu", lambda: nn.GELU(), lambda: torch.nn.GELU(), (3, 6)),
    ("gelu_tanh", lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh"), (3, 6)),
    ("silu", lambda: nn.SiLU(), lambda: torch.nn.SiLU(), (3, 6)),
    ("relu", lambda: nn.ReLU(), lambda: torch.nn.ReLU(), (3, 6)),
    ("leaky_relu", lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2), (3, 6)),
    ("tanh", lambda: nn.Tanh(), lambda: torch.nn.Tanh(), (3, 6)),
    ("sigmoid", lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid(), (3, 6)),
    ("softmax", lambda: nn.Softmax(-1), lambda: torch.nn.Softmax(-1), (3, 6)),
    ("log_softmax", lambda: nn.LogSoftmax(1), lambda: torch.nn.LogSoftmax(1), (3, 6, 2)),
    ("identity", lambda: nn.Identity(), lambda: torch.nn.Identity(), (3, 6)),
    ("flatten", lambda: nn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 4, 5)),
    ("conv", lambda: nn.Conv2d(3, 4, 3, padding=1), lambda: torch.nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 5)),
    ("conv_strided", lambda: nn.Conv2d(3, 4, (3, 2), stride=2, dilation=(1, 2), bias=False),
     lambda: torch.nn.Conv2d(3, 4, (3, 2), stride=2, dilation=(1, 2), bias=False), (2, 3, 7, 8)),
    ("conv_groups", lambda: nn.Conv2d(4, 6, 3, groups=2), lambda: torch.nn.Conv2d(4, 6, 3, groups=2), (2, 4, 5, 5)),
    ("conv_same", lambda: nn.Conv2d(3, 2, 4, padding="same"), lambda: torch.nn.Conv2d(3, 2, 4, padding="same"),
     (1, 3, 6, 6)),
    ("maxpool", lambda: nn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (2, 3, 6, 6)),
    ("maxpool_pad", lambda: nn.MaxPool2d(3, 2, 1), lambda: torch.nn.MaxPool2d(3, 2, 1), (2, 3, 7, 6)),
    ("avgpool", lambda: nn.AvgPool2d(2), lambda: torch.nn.AvgPool2d(2), (2, 3, 6, 6)),
    ("avgpool_pad", lambda: nn.AvgPool2d(3, 2, 1), lambda: torch.nn.AvgPool2d(3, 2, 1), (2, 3, 7, 6)),
    ("avgpool_nocount", lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
     lambda: torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 6)),
    ("adaptive_1", lambda: nn.AdaptiveAvgPool2d(1), lambda: torch.nn.AdaptiveAvgPool2d(1), (2, 3, 5, 6)),
    ("adaptive_div", lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: torch.nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 4, 6)),
    ("adaptive_odd", lambda: nn.AdaptiveAvgPool2d(3), lambda: torch.nn.AdaptiveAvgPool2d(3), (1, 2, 7, 8)),
    ("batchnorm_train", lambda: nn.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (4, 3, 5, 5)),
    ("batchnorm1d", lambda: nn.BatchNorm1d(6), lambda: torch.nn.BatchNorm1d(6), (8, 6)),
    ("batchnorm_noaffine", lambda: nn.BatchNorm2d(3, affine=False, momentum=None),
     lambda: torch.nn.BatchNorm2d(3, affine=False, momentum=None), (4, 3, 2, 2)),
]


@pytest.mark.parametrize("name,make,make_torch,shape", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_torch(name, make, make_torch, shape):
    tg.manual_seed(0)
    m, tm = make(), make_torch()
    with tg.no_grad():   # non-trivial affine parameters
        for p in m.parameters():
            p.copy_(tg.randn(*p.shape) * 0.5 + 1.0)
    copy_weights(m, tm)
    x = tg.randn(*shape).requires_grad_()
    tx = tt(x, requires_grad=True)
    y, ty = m(x), tm(tx)
    close(y, ty)
    gout = tg.randn(*y.shape)
    (y * gout).sum().backward()
    (ty * tt(gout)).sum().backward()
    close(x.grad, tx.grad, atol=1e-5)
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        close(p.grad, tparams[n].grad, atol=1e-5)
    for n, b in m.named_buffers():
        close(b, dict(tm.named_buffers())[n])
    if "batchnorm" in name:   # eval mode uses the running statistics
        m.eval(), tm.eval()
        close(m(x), tm(tx))


def test_embedding_forward_backward_and_padding_idx():
    tg.manual_seed(1)
    for kw in ({}, {"padding_idx": 2}):
        m, tm = nn.Embedding(10, 6, **kw), torch.nn.Embedding(10, 6, **kw)
        copy_weights(m, tm)
        if kw:
            assert np.all(m.weight.numpy()[2] == 0)
        idx = tg.tensor([[1, 2, 2], [9, 0, 1]])
        y, ty = m(idx), tm(torch.tensor(idx.numpy()))
        close(y, ty)
        g = tg.randn(*y.shape)
        (y * g).sum().backward()
        (ty * tt(g)).sum().backward()
        close(m.weight.grad, tm.weight.grad)


# -- functional -------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(), dict(ignore_index=1), dict(label_smoothing=0.1), dict(reduction="sum"),
                                dict(reduction="none", ignore_index=0), dict(label_smoothing=0.2, ignore_index=3)])
def test_cross_entropy(kw):
    tg.manual_seed(2)
    x = tg.randn(8, 5).requires_grad_()
    t = tg.tensor([0, 1, 2, 3, 4, 1, 1, 0])
    tx = tt(x, True)
    y, ty = F.cross_entropy(x, t, **kw), torch.nn.functional.cross_entropy(tx, torch.tensor(t.numpy()), **kw)
    close(y, ty)
    y.sum().backward(), ty.sum().backward()
    close(x.grad, tx.grad)


def test_cross_entropy_spatial_probabilities_and_nll():
    tg.manual_seed(3)
    x = tg.randn(2, 4, 3)               # [N, C, d]: classes on axis 1, as in PyTorch
    t = tg.tensor([[0, 3, 1], [2, 2, 0]])
    close(F.cross_entropy(x, t), torch.nn.functional.cross_entropy(tt(x), torch.tensor(t.numpy())))
    p = tg.randn(5, 4).softmax(-1)
    z = tg.randn(5, 4)
    close(F.cross_entropy(z, p, label_smoothing=0.1),
          torch.nn.functional.cross_entropy(tt(z), tt(p), label_smoothing=0.1))
    lp = z.log_softmax(-1)
    tgt = tg.tensor([0, 3, -100, 1, 2])
    close(F.nll_loss(lp, tgt), torch.nn.functional.nll_loss(tt(lp), torch.tensor(tgt.numpy())))
    close(nn.CrossEntropyLoss()(z, tgt), torch.nn.CrossEntropyLoss()(tt(z), torch.tensor(tgt.numpy())))


def test_mse_l1():
    a, b = tg.randn(4, 3), tg.randn(4, 3)
    for red in ("mean", "sum", "none"):
        close(F.mse_loss(a, b, reduction=red), torch.nn.functional.mse_loss(tt(a), tt(b), reduction=red))
        close(F.l1_loss(a, b, reduction=red), torch.nn.functional.l1_loss(tt(a), tt(b), reduction=red))


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "scale", "gqa", "cross"])
def test_scaled_dot_product_attention(case):
    tg.manual_seed(4)
    hk = 2 if case == "gqa" else 4
    s = 3 if case == "cross" else 5
    q, k, v = tg.randn(2, 4, 5, 8), tg.randn(2, hk, s, 8), tg.randn(2, hk, s, 8)
    kw = {}
    if case == "causal":
        kw["is_causal"] = True
    elif case == "bool_mask":
        kw["attn_mask"] = tg.rand(5, s) > 0.3
    elif case == "float_mask":
        kw["attn_mask"] = tg.randn(2, 1, 5, s)
    elif case == "scale":
        kw["scale"] = 0.3
    elif case == "gqa":
        kw["enable_gqa"] = True
    tkw = {key: (tt(val) if isinstance(val, tg.Tensor) else val) for key, val in kw.items()}
    if case == "bool_mask":
        kw["attn_mask"] = kw["attn_mask"] | (tg.arange(s) == 0)   # no fully masked row
        tkw["attn_mask"] = tt(kw["attn_mask"])
    ins = [t.requires_grad_() for t in (q, k, v)]
    tins = [tt(t, True) for t in ins]
    o = F.scaled_dot_product_attention(*ins, **kw)
    to = torch.nn.functional.scaled_dot_product_attention(*tins, **tkw)
    close(o, to)
    g = tg.randn(*o.shape)
    (o * g).sum().backward(), (to * tt(g)).sum().backward()
    for a, b in zip(ins, tins):
        close(a.grad, b.grad, atol=1e-5)


def test_attention_dropout_path_and_errors():
    q = tg.randn(1, 2, 4, 8)
    out = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5, is_causal=True)
    assert out.shape == (1, 2, 4, 8)
    with pytest.raises(ValueError, match="enable_gqa"):
        F.scaled_dot_product_attention(q, tg.randn(1, 1, 4, 8), tg.randn(1, 1, 4, 8))


def test_one_hot_pad_and_functional_activations():
    idx = tg.tensor([0, 2, 1])
    assert F.one_hot(idx, 4).tolist() == torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), 4).tolist()
    assert F.one_hot(idx).shape == (3, 3)
    x = tg.randn(2, 3, 4)
    for p in [(1, 2), (1, 0, 2, 1), (-1, 2, 0, 1, 1, 0)]:
        close(F.pad(x, p, value=0.5), torch.nn.functional.pad(tt(x), p, value=0.5))
    close(F.gelu(x, approximate="tanh"), torch.nn.functional.gelu(tt(x), approximate="tanh"))
    close(F.log_softmax(x, 1), torch.nn.functional.log_softmax(tt(x), 1))
    close(F.normalize(x, dim=-1), torch.nn.functional.normalize(tt(x), dim=-1))


def test_dropout_train_eval_and_compiled_equals_eager():
    d = nn.Dropout(0.25)
    x = tg.ones(2000)
    tg.manual_seed(5)
    y = d(x).numpy()
    assert set(np.unique(y).tolist()) <= {0.0, float(np.float32(1 / 0.75))}
    assert abs((y == 0).mean() - 0.25) < 0.05
    d.eval()
    assert d(x) is x

    d.train()
    step = tg.compile(lambda x: d(x) * 2)
    tg.manual_seed(6)
    eager = [(d(x) * 2).numpy() for _ in range(2)]
    tg.manual_seed(6)
    compiled = [step(x).numpy() for _ in range(2)]
    np.testing.assert_array_equal(eager[0], compiled[0])
    np.testing.assert_array_equal(eager[1], compiled[1])   # the RNG state advanced as a write-back
    assert not np.array_equal(compiled[0], compiled[1])


# -- init -------------------------------------------------------------------------------------
def test_init_functions():
    tg.manual_seed(9)
    w = tg.empty(200, 300)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    assert abs(w.numpy()).max() <= 1 / math.sqrt(300) + 1e-7
    nn.init.xavier_uniform_(w, gain=2.0)
    assert abs(w.numpy()).max() <= 2.0 * math.sqrt(6 / 500) + 1e-7
    nn.init.xavier_normal_(w)
    assert abs(w.numpy().std() - math.sqrt(2 / 500)) < 0.003
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.numpy().std() - math.sqrt(2 / 200)) < 0.003
    nn.init.normal_(w, mean=1.0, std=0.02)
    assert abs(w.numpy().mean() - 1.0) < 0.001 and abs(w.numpy().std() - 0.02) < 0.001
    nn.init.trunc_normal_(w, std=1.0, a=-1.0, b=1.5)
    assert w.numpy().min() >= -1.0 and w.numpy().max() <= 1.5 and w.numpy().min() < -0.99
    nn.init.uniform_(w, -3, -2)
    assert w.numpy().min() >= -3 and w.numpy().max() <= -2
    nn.init.constant_(w, 0.5)
    assert np.all(w.numpy() == 0.5)
    nn.init.zeros_(w), nn.init.ones_(w[0:1])      # w[0:1] is a view: as in PyTorch, it writes into w
    assert np.all(w.numpy()[0] == 1) and np.all(w.numpy()[1:] == 0)
    p = nn.Parameter(tg.empty(3, 4))
    nn.init.ones_(p)
    assert p.requires_grad and p.grad is None and np.all(p.numpy() == 1)
    assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    lin = nn.Linear(64, 10)
    assert abs(lin.weight.numpy()).max() <= 1 / 8 and abs(lin.bias.numpy()).max() <= 1 / 8
    emb = nn.Embedding(1000, 16)
    assert abs(emb.weight.numpy().std() - 1.0) < 0.05


def test_clip_grad_norm_matches_torch():
    tg.manual_seed(10)
    ps = [nn.Parameter(tg.randn(4, 3)), nn.Parameter(tg.randn(5))]
    tps = [tt(p, True) for p in ps]
    for p, q in zip(ps, tps):
        g = tg.randn(*p.shape) * 3
        p.grad, q.grad = g, tt(g)
    for max_norm, norm_type in ((1.0, 2.0), (100.0, 2.0), (0.5, math.inf)):
        total = nn.utils.clip_grad_norm_(ps, max_norm, norm_type)
        ttotal = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type)
        close(total, ttotal)
        for p, q in zip(ps, tps):
            close(p.grad, q.grad)


# -- BatchNorm's running statistics inside a compiled training step -----------------------------
def _cnn(lib):
    n = lib.nn
    return n.Sequential(n.Conv2d(2, 4, 3, padding=1), n.BatchNorm2d(4), n.ReLU(), n.MaxPool2d(2),
                        n.Conv2d(4, 4, 3), n.BatchNorm2d(4, momentum=0.3), n.ReLU(), n.AdaptiveAvgPool2d(1),
                        n.Flatten(), n.Linear(4, 3))


def test_batchnorm_running_stats_after_compiled_training():
    tg.manual_seed(11)
    m, tm = _cnn(tg), _cnn(torch)
    copy_weights(m, tm)
    opt = tg.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1, momentum=0.9)

    @tg.compile
    def train_step(x, y):
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss

    for i in range(4):
        x, y = tg.randn(6, 2, 6, 6), tg.randint(0, 3, (6,))
        loss = train_step(x, y)
        tloss = torch.nn.functional.cross_entropy(tm(tt(x)), torch.tensor(y.numpy()))
        tloss.backward()
        topt.step()
        topt.zero_grad()
        close(loss, tloss)
    assert len(train_step.entries) == 1
    tsd = tm.state_dict()
    for k, v in m.state_dict().items():
        close(v, tsd[k], atol=1e-5)
    assert int(m[1].num_batches_tracked.item()) == 4
    m.eval(), tm.eval()
    x = tg.randn(3, 2, 6, 6)
    close(tg.compile(lambda x: m(x))(x), tm(tt(x)), atol=1e-5)


def test_compiled_step_follows_train_eval_switch():
    d = nn.Dropout(0.5)
    f = tg.compile(lambda x: d(x))
    f(tg.ones(64))
    d.eval()
    np.testing.assert_array_equal(f(tg.ones(64)).numpy(), np.ones(64, np.float32))


@pytest.mark.parametrize("window", [dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)],
                         ids=["tiles", "overlapping-padded"])
@pytest.mark.parametrize("backend", ["eager", "numpy", "cpu"])
def test_max_pool_routes_a_tied_windows_gradient_to_its_first_maximum_as_pytorch(backend, window):
    """Windows with equal values (a constant image region after a convolution) give their whole
    gradient to the first maximum, as PyTorch's max_pool2d does; a NaN in a window propagates."""
    x = np.array([[3, 3, 1, 5], [3, 2, 5, 5], [0, 0, 7, 1], [0, 0, 2, 7]], np.float32).reshape(1, 1, 4, 4)
    x = np.concatenate([x, x * -1.0], axis=1)
    x[0, 1, 3, 3] = np.nan
    w = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2) + 1.0

    def f(x):
        y = F.max_pool2d(x, **window)
        return y, (y.nan_to_num() * tg.tensor(np.resize(w, y.shape))).sum()
    fn = f if backend == "eager" else tg.compile(f, backend=backend)
    xt = tg.tensor(x, requires_grad=True)
    if backend == "eager":
        y, loss = fn(xt)
        loss.backward()
        grad = xt.grad.numpy()
    else:
        grad_fn = tg.compile(lambda x: tg.autograd.grad(f(x)[1], [x])[0], backend=backend)
        y, _ = fn(xt)
        grad = grad_fn(xt).numpy()
    xr = torch.tensor(x, requires_grad=True)
    yr = torch.nn.functional.max_pool2d(xr, **window)
    (yr.nan_to_num() * torch.tensor(np.resize(w, yr.shape))).sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), yr.detach().numpy())
    np.testing.assert_array_equal(grad, xr.grad.numpy())
