"""tracegrad.nn.parallel: `DistributedDataParallel`, as torch.nn.parallel's."""
from .ddp import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
