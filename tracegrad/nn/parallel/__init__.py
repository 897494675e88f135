"""tracegrad.nn.parallel: `DistributedDataParallel` and `DataParallel`, as torch.nn.parallel's."""
from .ddp import DataParallel, DistributedDataParallel

__all__ = ["DataParallel", "DistributedDataParallel"]
