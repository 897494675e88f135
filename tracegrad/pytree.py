"""Flatten nested tuples/lists/dicts into leaves and back (arguments and results of a step)."""
from __future__ import annotations

from typing import Any, Callable


def flatten(tree: Any, is_leaf: Callable[[Any], bool] = lambda x: False) -> tuple[list, Any]:
    leaves: list = []

    def walk(x):
        if not is_leaf(x) and isinstance(x, (tuple, list)):
            return (type(x), tuple(walk(v) for v in x))
        if not is_leaf(x) and isinstance(x, dict):
            return (dict, tuple((k, walk(v)) for k, v in x.items()))
        leaves.append(x)
        return None
    return leaves, walk(tree)


def unflatten(spec: Any, leaves: list) -> Any:
    it = iter(leaves)

    def build(s):
        if s is None:
            return next(it)
        kind, items = s
        if kind is dict:
            return {k: build(v) for k, v in items}
        vals = [build(v) for v in items]
        return kind(*vals) if hasattr(kind, "_fields") else kind(vals)
    return build(spec)
