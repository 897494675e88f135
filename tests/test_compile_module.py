"""tg.compile(model) returns a module (as torch.compile does) and accepts torch.compile's keywords."""
import numpy as np
import pytest

import tracegrad as tg


class Net(tg.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = tg.nn.Linear(4, 3)
        self.drop = tg.nn.Dropout(0.5)
        self.config = {"n": 4}

    def forward(self, x, y=None):
        out = self.drop(self.fc(x))
        return out if y is None else ((out - y) ** 2).mean()

    def describe(self):
        return "net"


def test_compiled_module_is_the_module():
    tg.manual_seed(0)
    net = Net()
    model = tg.compile(net, mode="max-autotune", fullgraph=True, dynamic=False, backend="inductor")
    assert model._orig_mod is net and isinstance(model, tg.nn.Module)
    assert [id(p) for p in model.parameters()] == [id(p) for p in net.parameters()]
    assert list(model.state_dict()) == ["_orig_mod.fc.weight", "_orig_mod.fc.bias"]
    assert model.config == {"n": 4} and model.describe() == "net" and model.fc is net.fc
    model.eval()
    assert not net.training and not net.fc.training
    x, y = tg.randn(2, 4), tg.randn(2, 3)
    np.testing.assert_allclose(model(x).numpy(), net(x).numpy(), rtol=1e-6)
    loss = model(x, y)                     # a second signature, and a backward through the compiled call
    loss.backward()
    assert net.fc.weight.grad is not None
    model.train()
    assert net.training and model.training
    z = tg.ones(64, 4)
    train_out = model(z)                   # dropout on: some outputs are zeroed
    model.eval()
    np.testing.assert_allclose(model(z).numpy(), net(z).numpy(), rtol=1e-6)
    assert (train_out.numpy() == 0).any() and not (model(z).numpy() == 0).any()


def test_compile_keywords_checked():
    with pytest.raises(ValueError, match="backend must be one of"):
        tg.compile(lambda x: x, backend="tensorrt")
    with pytest.raises(ValueError, match="mode must be one of"):
        tg.compile(lambda x: x, mode="fastest")
    f = lambda x: x * 2            # noqa: E731
    assert tg.compile(f, disable=True) is f
    dec = tg.compile(mode="reduce-overhead")
    assert isinstance(dec(f), tg.CompiledFunction)
