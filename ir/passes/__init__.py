"""Graph passes, each a named function `Graph -> Graph`, and the pass manager that records them."""
from .autodiff import backprop, grad
from .decompose import decompose
from .manager import PassManager, Stage
from .phases import phase_view
from .simplify import cse, dce, rewrite, simplify

__all__ = ["backprop", "grad", "decompose", "PassManager", "Stage", "phase_view", "cse", "dce", "rewrite",
           "simplify"]
