"""Parallel plans: which style each parameter takes, chosen from the module that uses it, and
overridable by module path.

Styles of a Linear: "column" (its output features split over the tp ranks), "row" (its input
features split; its output is a partial sum), "replicate". Of an Embedding: "vocab" (its rows
split) or "replicate". "auto" (the default) follows Megatron-LM: a Linear that reads a
replicated activation is column-parallel, one that reads a column-split activation is
row-parallel, so attention's q/k/v and an MLP's up/gate projections are column-parallel and
the output and down projections row-parallel; embeddings and the output head split the
vocabulary; norms and biases stay whole (biases of column-parallel Linears split with them).

    plan = Plan({"*.k_proj": "replicate", "*.v_proj": "replicate", "lm_head": "replicate"})
    tg.compile(step, mesh=tg.Mesh(tp=2), plan=plan)        # or plan={...} directly
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

LINEAR_STYLES = ("auto", "column", "row", "replicate")
EMBEDDING_STYLES = ("auto", "vocab", "replicate")


@dataclass(frozen=True)
class Choice:
    """What the plan did with one parameter: for `explain()`."""
    param: str
    module: str
    style: str
    spec: str              # how the parameter is split: "S(0)", "R", ...
    local_shape: tuple
    why: str = ""

    def __str__(self) -> str:
        why = f"  ({self.why})" if self.why else ""
        return f"{self.param:<44} {self.module:<32} {self.style:<9} {self.spec:<12} local {list(self.local_shape)}{why}"


@dataclass
class Plan:
    """Module-path patterns (fnmatch: `*.q_proj`, `layers.0.mlp.*`) to a style; the first pattern
    that matches a module wins, an exact path before any pattern."""
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        for pattern, style in self.overrides.items():
            if style not in set(LINEAR_STYLES) | set(EMBEDDING_STYLES):
                raise ValueError(f"plan: style {style!r} for {pattern!r} is not one of "
                                 f"{sorted(set(LINEAR_STYLES) | set(EMBEDDING_STYLES))}")

    @classmethod
    def of(cls, plan) -> "Plan":
        return plan if isinstance(plan, Plan) else cls(dict(plan or {}))

    def style(self, module: str, kind: str) -> str:
        """The style for `module` (kind "linear" or "embedding"), "auto" when no pattern names it."""
        allowed = LINEAR_STYLES if kind == "linear" else EMBEDDING_STYLES
        hit = self.overrides.get(module)
        if hit is None:
            hit = next((s for p, s in self.overrides.items() if fnmatch.fnmatchcase(module, p)), "auto")
        if hit not in allowed:
            raise ValueError(f"plan: {module} is used as a {kind}; its style must be one of {allowed}, got {hit!r}")
        return hit
