"""A small LLaMA trained a few SGD steps under each of several mesh plans, in one process group
(`tracegrad launch -n N`); each plan's steps are compiled with `tg.compile(mesh=...)`. Every rank
writes its losses, the bytes of state it holds and its `state_dict()` (the full tensors,
gathered) per plan to <--out>.rank<R>.npz, keys "<plan>/losses", "<plan>/held" and
"<plan>/<parameter>"; with --reference, the
single-device run of the same steps too (plan "one"), computed on each rank alone.

    tracegrad launch -n 2 mesh_plans.py --out /tmp/r --plans tp2 pp2-afab pp2-1f1b cp2
"""
import argparse

import numpy as np

import tracegrad as tg
from tracegrad.models.llama import Llama, LlamaConfig

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--plans", nargs="+", default=["tp2"])
p.add_argument("--steps", type=int, default=3)
p.add_argument("--reference", action="store_true")
a = p.parse_args()

tg.distributed.init_process_group("gloo")
rank = tg.distributed.get_rank()
data = np.random.default_rng(0)
BATCHES = [(data.integers(0, 32, (4, 8)), data.integers(0, 32, (4, 8))) for _ in range(a.steps)]


def mesh_of(plan: str):
    """"tp2" -> Mesh(tp=2); "pp2-afab" -> Mesh(pp=2), schedule AFAB; "dp2tp2" -> Mesh(dp=2, tp=2)."""
    name, _, schedule = plan.partition("-")
    sizes, axis = {}, ""
    for ch in name:
        if ch.isalpha():
            axis += ch
        else:
            sizes[axis], axis = int(ch), ""
    return tg.Mesh(**sizes), schedule or "1f1b"


def train(mesh=None, schedule="1f1b"):
    tg.manual_seed(0)
    model = Llama(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16))
    # SGD: Adam would turn rounding noise in gradients that are zero in exact arithmetic into steps of lr
    opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train_step(x, y):
        _, loss = model(x, y)
        loss.backward()
        tg.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
        return loss

    kw = dict(mesh=mesh, schedule=schedule, microbatches=2) if mesh is not None and mesh.pp > 1 else dict(mesh=mesh)
    step = tg.compile(train_step, backend="numpy", **kw)
    dp, dp_rank = (mesh.dp, mesh.coords(rank)["dp"]) if mesh is not None else (1, 0)
    losses = []
    for x, y in BATCHES:          # dp: each rank its rows (DDP's semantics)
        rows = len(x) // dp
        losses.append(float(step(tg.tensor(x[dp_rank * rows:(dp_rank + 1) * rows]),
                                 tg.tensor(y[dp_rank * rows:(dp_rank + 1) * rows])).item()))
    state = list(model.parameters()) + [t for s in opt.state.values() for t in s.values() if isinstance(t, tg.Tensor)]
    held = sum(t._data.nbytes for t in state)        # a tensor held in blocks: this rank's block
    return np.array(losses), held, {k: v.numpy().copy() for k, v in model.state_dict().items()}


out = {}
for plan in (["one"] if a.reference else []) + a.plans:
    losses, held, params = train() if plan == "one" else train(*mesh_of(plan))
    out[f"{plan}/losses"], out[f"{plan}/held"] = losses, held
    out.update({f"{plan}/{k}": v for k, v in params.items()})
np.savez(f"{a.out}.rank{rank}.npz", **out)
