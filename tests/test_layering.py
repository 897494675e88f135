"""Imports point one way: ir <- codegen <- runtime <- frontend (tracegrad/)."""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"ir": 0, "codegen": 1, "runtime": 2}
FRONTEND = 3


def _layer_of_import(module: str, level: int, here: str) -> int | None:
    """Which layer an import statement reaches, or None for third-party/stdlib."""
    if level:   # relative: resolve against the file's package as installed (tracegrad.<layer>...)
        parts = here.split(".")[: -level]
        module = ".".join(parts + ([module] if module else []))
    if not module.startswith("tracegrad"):
        return None
    parts = module.split(".")
    if len(parts) == 1:
        return FRONTEND
    return LAYERS.get(parts[1], FRONTEND)


@pytest.mark.parametrize("folder", ["ir", "codegen", "runtime"])
def test_lower_layers_do_not_import_higher_ones(folder):
    mine = LAYERS[folder]
    bad = []
    for path in (ROOT / folder).rglob("*.py"):
        rel = path.relative_to(ROOT / folder).with_suffix("")
        here = ".".join(["tracegrad", folder, *rel.parts])
        if rel.name == "__init__":
            here = here.rsplit(".", 1)[0] + ".__init__"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                layer = _layer_of_import(node.module or "", node.level, here)
            elif isinstance(node, ast.Import):
                layer = max((_layer_of_import(a.name, 0, here) or -1 for a in node.names), default=-1)
            else:
                continue
            if layer is not None and layer > mine:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not bad, f"{folder}/ imports from a higher layer at: {', '.join(bad)}"


def test_nothing_named_ir_or_runtime_is_importable_at_top_level():
    import importlib.util
    assert importlib.util.find_spec("tracegrad.ir") is not None
    for name in ("ir", "codegen", "runtime"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" not in (spec.origin or ""), name
