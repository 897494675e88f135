"""A small GPT trained with DistributedDataParallel; run alone (one rank, the concatenated batch)
or under `tracegrad launch -n N`. Writes losses (the mean over ranks) and rank 0's parameters to
--out (npz). Options: --zero (ZeRO-1), --accum K (K micro-batches, the first K-1 under no_sync),
--save/--resume PATH (checkpoint after --steps / start from one), --die-at STEP (rank 1 kills
itself there), --graph-differs (rank 1 traces another shape)."""
import argparse
import os
import signal

import numpy as np

import tracegrad as tg
from tracegrad.models.gpt import GPT, GPTConfig
from tracegrad.nn.parallel import DistributedDataParallel as DDP
from tracegrad.utils.checkpoint import load_checkpoint, save_checkpoint

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--first-step", type=int, default=0)
p.add_argument("--accum", type=int, default=1)
p.add_argument("--zero", action="store_true")
p.add_argument("--save")
p.add_argument("--resume")
p.add_argument("--die-at", type=int, default=-1)
p.add_argument("--backend", default="numpy")
p.add_argument("--device", default="cpu", help="cpu, or cuda: cuda:<local rank> and NCCL")
a = p.parse_args()

tg.distributed.init_process_group("nccl" if a.device == "cuda" else "gloo")
rank, world = tg.distributed.get_rank(), tg.distributed.get_world_size()
device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if a.device == "cuda" else "cpu"
tg.manual_seed(0)
model = DDP(GPT(GPTConfig(block_size=16, vocab_size=31, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).to(device))
params = list(model.module.parameters())
# SGD: Adam would turn rounding noise in gradients that are zero in exact arithmetic into steps of lr
opt = (tg.distributed.ZeroRedundancyOptimizer(params, tg.optim.SGD, lr=0.1, momentum=0.9) if a.zero
       else tg.optim.SGD(params, lr=0.1, momentum=0.9))
if a.resume:
    load_checkpoint(a.resume, model=model, optimizer=opt)

GLOBAL = 8                                   # rows per micro-batch over all ranks
data = np.random.default_rng(0)
batches = [[(data.integers(0, 31, (GLOBAL, 16)), data.integers(0, 31, (GLOBAL, 16))) for _ in range(a.accum)]
           for _ in range(8)]


def local(x):                                # this rank's rows: DDP's semantics
    rows = GLOBAL // world
    return tg.tensor(x[rank * rows:(rank + 1) * rows]).to(device)


@tg.compile(backend="auto" if a.device == "cuda" else a.backend)
def accumulate(x, y):
    _, loss = model(x, y)
    (loss / a.accum).backward()
    return loss


@tg.compile(backend="auto" if a.device == "cuda" else a.backend)
def update(x, y):
    _, loss = model(x, y)
    (loss / a.accum).backward()
    tg.nn.utils.clip_grad_norm_(params, 0.5)  # the global norm: the gradients are already averaged
    opt.step()
    opt.zero_grad()
    return loss


losses = []
for step in range(a.first_step, a.first_step + a.steps):
    if step == a.die_at and rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    total = 0.0
    for k, (x, y) in enumerate(batches[step]):
        if k < a.accum - 1:
            with model.no_sync():
                loss = accumulate(local(x), local(y))
        else:
            loss = update(local(x), local(y))
        tg.distributed.all_reduce(loss, op=tg.distributed.ReduceOp.AVG)
        total += float(loss.item()) / a.accum
    losses.append(total)
if a.save:
    save_checkpoint(a.save, model=model, optimizer=opt, step=a.first_step + a.steps)
if rank == 0:
    np.savez(a.out, losses=np.array(losses), **{k: v.numpy() for k, v in model.module.state_dict().items()})
if a.save or rank == 0:
    print(f"rank {rank}/{world}: losses {losses}", flush=True)
tg.distributed.destroy_process_group()
