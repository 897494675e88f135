"""Context parallelism (`Mesh(cp=)`) on thread ranks: the sequence split zig-zag, ring attention
forward and backward, positions (RoPE, position embeddings) right: the same losses and weights
as one device; and every axis composed."""
from __future__ import annotations

import numpy as np
import pytest

import tracegrad as tg
from tracegrad.ir.passes.fusion import fuse
from tracegrad.ir.passes.parallel import ParallelPlanError
from tracegrad.models.gpt import GPT, GPTConfig

from parallel_check import check_plan, train
from test_pipeline_parallel import _llama
from test_tensor_parallel import PlainLM, _batches


def test_llama_cp2_ring_attention_equals_one_device():
    runs = check_plan(_llama(num_hidden_layers=1), _batches(32, (2, 8)), tg.Mesh(cp=2))
    for rank, (_, _, step) in enumerate(runs):
        graph = step.graphs()["cp"]
        ops = [n.op for n in graph.nodes]
        # k, v go once around the ring forward; k, v, dk, dv backward (dk, dv home at the end)
        assert ops.count("send") == 2 + 4 + 2
        x = step.entries[-1].stages["traced"].inputs[0]
        split = [n for n in graph.nodes if n.tag == "cp(split)"]
        assert split[-1].outputs[0].shape == (2, 4) and x.shape == (2, 8)   # blocks r and 3-r of 4
        assert [n.attrs["starts"][2] for n in split if n.op == "slice"][:2] == [rank, 3 - rank]
        text = step.explain()
        assert "ring attention over 2 ranks" in text and "send" in text
        # fusion keeps the order of sends and receives (a receive moved above this rank's earlier
        # send would wait for a peer waiting for that send)
        optimized = step.entries[-1].stages["optimized"]
        assert _messages(fuse(optimized)) == _messages(optimized)


def _messages(graph):
    return [(n.op, (n.inputs or n.outputs)[0].name) for n in graph.nodes if n.op in ("send", "recv")]


def test_zigzag_gives_each_rank_its_true_positions():
    # GPT-2: learned position embeddings looked up by arange(T), sliced to the rank's blocks
    tg.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    check_plan(model, _batches(32, (2, 16)), tg.Mesh(cp=2))


def test_plain_model_cp4():
    check_plan(PlainLM(), _batches(24, (2, 16)), tg.Mesh(cp=4))


def test_sequence_that_does_not_split_is_refused():
    with pytest.raises(ParallelPlanError, match=r"cp=2: batch argument x \[2, 6\].*4 blocks"):
        tg.distributed.run_local(lambda rank, m: train(m, _batches(24, (2, 6), n=1), tg.Mesh(cp=2)), 2,
                                 [(PlainLM(),) for _ in range(2)])


# NOTE: 16 thread ranks compile 16 graphs on CI's 2 cores (~50 s): the 4-axis run is marked slow;
# tp x cp here and dp x tp x pp in test_pipeline_parallel.py cover every pair of passes in CI
@pytest.mark.parametrize("mesh", [tg.Mesh(tp=2, cp=2),
                                  pytest.param(tg.Mesh(dp=2, tp=2, pp=2, cp=2), marks=pytest.mark.slow)],
                         ids=["tp2cp2", "all4"])
def test_every_axis_composes(mesh):
    runs = check_plan(_llama(), _batches(32, (4, 8), n=2), mesh, microbatches=2)
    state = runs[-1][1]      # any rank's model holds the whole tensors
    assert state["model.layers.1.mlp.down_proj.weight"].shape == (16, 24)


# NOTE: the generated Triton kernels run under the interpreter here (30-45 s a plan): slow
@pytest.mark.slow
@pytest.mark.parametrize("mesh", [tg.Mesh(tp=2), tg.Mesh(pp=2), tg.Mesh(cp=2)], ids=["tp2", "pp2", "cp2"])
def test_triton_backend_runs_every_axis(mesh):
    pytest.importorskip("triton")
    check_plan(_llama(), _batches(32, (2, 8), n=2), mesh, backend="triton")
