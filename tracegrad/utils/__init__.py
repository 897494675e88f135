"""tracegrad.utils: data loading (`data`), tokenizers, token files and checkpoints.

`tracegrad.utils.data` is imported with the package, as `torch.utils.data` is; the others load on
first use: `from tracegrad.utils.checkpoint import save_checkpoint, load_checkpoint`.
"""
from . import data  # noqa: F401
