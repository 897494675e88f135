"""tracegrad.optim: optimizers (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta) and LR schedulers, shaped like torch.optim.

Steps work eagerly and inside `@tg.compile`; changing `group["lr"]` (or calling a scheduler's
`step()`) between compiled calls takes effect without a retrace (see optimizer.py).
"""
from . import lr_scheduler
from .adam import Adam, AdamW
from .adaptive import Adadelta, Adagrad, RMSprop
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "lr_scheduler"]
