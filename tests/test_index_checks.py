"""Targets and indices are checked as PyTorch checks them: dtype, shape and range (ignore_index
excepted), naming the op and the user's line, eagerly and in compiled numpy steps."""
import pytest

import tracegrad as tg
import tracegrad.nn.functional as F


@pytest.fixture
def logits():
    tg.manual_seed(0)
    return tg.randn(4, 5)


@pytest.mark.parametrize("op", [F.cross_entropy, F.nll_loss])
def test_target_range_eager(op, logits):
    x = logits.log_softmax(-1)
    with pytest.raises(IndexError, match=r"target -5 is out of range \[0, 5\).*\n  at .*test_index_checks.py"):
        op(x, tg.tensor([0, 1, -5, 2]))
    with pytest.raises(IndexError, match="target 7"):
        op(x, tg.tensor([0, 1, 7, 2]))
    op(x, tg.tensor([0, -100, 2, 3]))                         # ignore_index is not a class
    op(x, tg.tensor([0, 9, 2, 3]), ignore_index=9)


def test_target_dtype_and_shape(logits):
    with pytest.raises(tg.ShapeError, match=r"expected target of shape \[4\].*got \[4, 1\].*squeeze"):
        F.cross_entropy(logits, tg.tensor([[0], [1], [2], [3]]))
    with pytest.raises(TypeError, match="integer tensor.*class probabilities"):
        F.cross_entropy(logits, tg.tensor([0.0, 1.0, 2.0, 3.0]))
    probs = logits.softmax(-1)
    F.cross_entropy(logits, probs)                           # probabilities shaped like the input are fine
    with pytest.raises(TypeError, match="nll_loss.*integer"):
        F.nll_loss(logits, tg.tensor([0.0, 1.0, 2.0, 3.0]))



def test_compiled_step_checks_range(logits):
    @tg.compile
    def step(x, t):
        return F.cross_entropy(x, t)

    assert step(logits, tg.tensor([0, 1, 2, 3])).item() > 0
    for bad in ([0, 1, -5, 2], [0, 1, 7, 2]):
        with pytest.raises(IndexError, match=r"(?s)cross_entropy.*out of range.*test_index_checks.py"):
            step(logits, tg.tensor(bad))
    assert step(logits, tg.tensor([0, -100, 2, 3])).item() > 0      # ignored rows still pass


def test_embedding_gather_index_select():
    w = tg.randn(4, 3)
    with pytest.raises(IndexError, match=r"embedding: index 9 is out of range \[0, 4\)"):
        F.embedding(tg.tensor([1, 9]), w)
    with pytest.raises(TypeError, match="embedding: indices must be an integer"):
        F.embedding(tg.tensor([1.0]), w)
    with pytest.raises(IndexError, match=r"take: index -1 is out of range"):
        w.index_select(0, tg.tensor([-1]))
    with pytest.raises(IndexError, match=r"gather: index 3 is out of range"):
        w.gather(1, tg.tensor([[0], [3], [0], [1]]))

    @tg.compile
    def emb(i):
        return tg.nn.functional.embedding(i, w)

    with pytest.raises(IndexError, match="out of range"):
        emb(tg.tensor([4]))
