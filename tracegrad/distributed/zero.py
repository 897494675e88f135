"""ZeRO-1: `ZeroRedundancyOptimizer`, PyTorch's name for optimizer state sharded over the dp ranks.

    opt = ZeroRedundancyOptimizer(model.parameters(), tg.optim.AdamW, lr=1e-3)

Each parameter belongs to one rank (greedily, the rank with the fewest elements so far); that rank
alone keeps its optimizer state and updates it, then broadcasts the new value to the others. With
`DistributedDataParallel` the gradients are already the mean over the ranks, so the update is the
single-device one, with 1/N of the optimizer state per rank. Inside a compiled step the
broadcasts are collectives of the graph. `consolidate_state_dict(to=0)` gathers the whole state
(checkpoints do it), and `state_dict()` then has the plain optimizer's layout, so a checkpoint
resumes on any number of ranks.
"""
from __future__ import annotations

import pickle

import numpy as np

from ..autograd import no_grad
from ..creation import tensor


def _ranks(process_group) -> tuple:
    from . import get_world_size   # NOTE: the package's __init__ imports this module first
    ranks = getattr(process_group, "ranks", process_group)
    return tuple(range(get_world_size())) if ranks is None else tuple(ranks)


def broadcast_object(obj, src: int, group=None):
    """A picklable object of global rank `src`, on every rank of the group (through any communicator)."""
    from . import current_comm, get_rank   # NOTE: the package's __init__ imports this module first
    comm, group = current_comm(), _ranks(group)
    data = np.frombuffer(pickle.dumps(obj), np.uint8) if get_rank() == src else np.zeros(0, np.uint8)
    n = comm.broadcast(comm.buffer(np.array([data.size], np.int64)), src, group)
    buf = data if get_rank() == src else np.zeros(int(n[0]), np.uint8)
    out = comm.broadcast(comm.buffer(buf), src, group)
    return pickle.loads((out.get() if hasattr(out, "get") else np.asarray(out)).tobytes())


class ZeroRedundancyOptimizer:
    def __init__(self, params, optimizer_class, process_group=None, **defaults):
        from . import get_rank   # NOTE: the package's __init__ imports this module first
        params = list(params)
        self.groups = [dict(g) for g in params] if params and isinstance(params[0], dict) else [{"params": params}]
        for g in self.groups:
            g["params"] = list(g["params"])
        self.ranks = _ranks(process_group)
        self.me = self.ranks.index(get_rank())
        load, self.owner = [0] * len(self.ranks), {}
        for g in self.groups:
            for p in g["params"]:
                r = load.index(min(load))
                self.owner[id(p)], load[r] = r, load[r] + p.numel()
        self.all_params = [p for g in self.groups for p in g["params"]]
        local = [{**g, "params": [p for p in g["params"] if self.owner[id(p)] == self.me]} for g in self.groups]
        self.optim = optimizer_class(local, **defaults)
        self._full_state = None

    @property
    def param_groups(self):
        return self.optim.param_groups

    @property
    def state(self):
        return self.optim.state

    def step(self, closure=None):
        from . import broadcast   # NOTE: the package's __init__ imports this module first
        loss = self.optim.step(closure) if closure is not None else self.optim.step()
        if len(self.ranks) > 1:
            with no_grad():
                for p in self.all_params:
                    broadcast(p, src=self.ranks[self.owner[id(p)]], group=self.ranks)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.all_params:
            if p.grad is not None:
                p.grad = None if set_to_none else p.grad.detach().zeros_like()

    # -- state dict: the plain optimizer's layout, indices over all parameters ------------------
    def _global_index(self) -> list[int]:
        """The global index of each local parameter, in the local optimizer's order."""
        index = {id(p): i for i, p in enumerate(self.all_params)}
        return [index[id(p)] for g in self.optim.param_groups for p in g["params"]]

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard of the state (every rank must call this)."""
        mine = self.optim.state_dict()
        glob = self._global_index()
        shard = {glob[i]: {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in s.items()}
                 for i, s in mine["state"].items()}
        state = {}
        for r in self.ranks:
            state.update(broadcast_object(shard, r, self.ranks))
        groups, start = [], 0
        for g, local in zip(self.groups, mine["param_groups"]):
            groups.append({**{k: v for k, v in local.items() if k != "params"},
                           "params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        self._full_state = {"state": dict(sorted(state.items())), "param_groups": groups}

    def state_dict(self) -> dict:
        if self._full_state is None:
            raise RuntimeError("ZeroRedundancyOptimizer.state_dict(): call consolidate_state_dict() on every "
                               "rank first (save_checkpoint does)")
        return {"state": {i: {k: tensor(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
                          for i, s in self._full_state["state"].items()},
                "param_groups": self._full_state["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take this rank's shard of a whole state (saved by any number of ranks, or by a plain optimizer)."""
        glob = self._global_index()
        local_groups, j = [], 0
        for g, saved in zip(self.optim.param_groups, state_dict["param_groups"]):
            local_groups.append({**{k: v for k, v in saved.items() if k != "params"},
                                 "params": list(range(j, j + len(g["params"])))})
            j += len(g["params"])
        saved = {int(k): v for k, v in state_dict["state"].items()}
        state = {i: saved[g] for i, g in enumerate(glob) if g in saved}
        self.optim.load_state_dict({"state": state, "param_groups": local_groups})
