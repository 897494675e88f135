"""Pipeline parallelism (`Mesh(pp=)`) on thread ranks: stages cut at module boundaries, micro-
batches run AFAB or 1F1B with send/recv, gradients accumulated: the same losses and weights as
one device, for LLaMA and a plain model written only here; composed with dp and tp."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ir.passes.parallel.schedule import bubble_fraction, stage_order
from tracegrad.models.llama import Llama, LlamaConfig

from parallel_check import check_plan, held_bytes
from test_tensor_parallel import PlainLM, _batches


def _llama(**kw):
    cfg = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=16)
    tg.manual_seed(0)
    return Llama(LlamaConfig(**{**cfg, **kw}))


@pytest.mark.parametrize("schedule", ["afab", "1f1b"])
def test_llama_pp2_equals_one_device(schedule):
    runs = check_plan(_llama(), _batches(32, (4, 8)), tg.Mesh(pp=2), microbatches=2, schedule=schedule)
    for rank, (_, _, step) in enumerate(runs):
        graph = step.graphs()["pp"]
        meta = graph.meta["pp"]
        assert meta["units"] == {0: ["model.layers.0"], 1: ["model.layers.1"]} and meta["stage"] == rank
        ops = [n.op for n in graph.nodes]
        # stage 0 sends each micro-batch's activations forward and gets their gradients back
        assert ops.count("recv" if rank else "send") >= 2
        assert "bubble 33.3%" in step.explain() and schedule.upper() in step.explain()


def test_plain_model_pp2_with_four_microbatches():
    # no ModuleList: the stages are cut between top-level modules, balanced by their cost
    runs = check_plan(PlainLM(), _batches(24, (4, 6)), tg.Mesh(pp=2), microbatches=4)
    units = runs[0][2].graphs()["pp"].meta["pp"]["units"]
    assert units[0][0] == "emb" and units[1][-1] == "out"


def test_microbatches_on_one_rank_accumulate_gradients():
    runs = check_plan(_llama(num_hidden_layers=1), _batches(32, (4, 8), n=2), tg.Mesh(), microbatches=4)
    graph = runs[0][2].graphs()["microbatch"]
    assert sum(n.op == "cross_entropy" for n in graph.nodes) == 4     # one loss per micro-batch


def test_one_f_one_b_keeps_fewer_microbatches_in_flight():
    assert stage_order("1f1b", 0, 2, 4) == [("F", 0), ("F", 1), ("B", 0), ("F", 2), ("B", 1), ("F", 3), ("B", 2),
                                            ("B", 3)]
    assert stage_order("1f1b", 1, 2, 4)[:2] == [("F", 0), ("B", 0)]
    assert stage_order("afab", 0, 2, 2) == [("F", 0), ("F", 1), ("B", 0), ("B", 1)]
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)


def test_pp_composes_with_dp_and_tp():
    check_plan(_llama(), _batches(32, (4, 8), n=2), tg.Mesh(dp=2, tp=2, pp=2), microbatches=2)


def test_more_stages_than_blocks_is_refused():
    from tracegrad.ir.passes.parallel import ParallelPlanError
    with pytest.raises(ParallelPlanError, match=r"pp=3: the model has 2 blocks"):
        check_plan(_llama(), _batches(32, (4, 8), n=1), tg.Mesh(pp=3), microbatches=2)


def test_pp2_stages_hold_their_own_state_and_reload_a_checkpoint():
    batches = _batches(32, (4, 8), n=2)

    def run(rank, model):
        init = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def train_step(x, y):
            _, loss = model(x, y)
            loss.backward()
            tg.nn.utils.clip_grad_norm_(model.parameters(), 0.5)     # a norm over both stages' gradients
            opt.step()
            opt.zero_grad()
            return loss

        step = tg.compile(train_step, backend="numpy", mesh=tg.Mesh(pp=2), microbatches=2)
        losses = [float(step(tg.tensor(x), tg.tensor(y)).item()) for x, y in batches]
        held, text = held_bytes(model, opt), step.explain()
        model.load_state_dict({k: tg.tensor(v) for k, v in init.items()})      # whole tensors in: sliced again
        again = float(step(tg.tensor(batches[0][0]), tg.tensor(batches[0][1])).item())
        return losses, held, text, again

    model = _llama()
    whole = 2 * sum(p.numel() * 4 for p in model.parameters())      # parameters + momentum on one device
    runs = tg.distributed.run_local(run, 2, [(copy.deepcopy(model),) for _ in range(2)])
    for losses, held, text, again in runs:
        # each stage holds its block's layers; the embedding sits with stage 0, the head with stage 1
        assert held < 0.55 * whole, (held, whole)
        assert "state held by this rank" in text and "of other stages' not held" in text
        # the loss of the initial weights again: the checkpoint went back into each stage's part
        np.testing.assert_allclose(again, losses[0], rtol=1e-6)
