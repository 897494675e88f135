"""Imports point one way: ir <- runtime <- codegen <- frontend (tracegrad/); runtime knows no graph."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = {"ir": 0, "runtime": 1, "codegen": 2}
FRONTEND = 3
# runtime may use the IR's types (dtypes, TensorType), never its graphs or passes
RUNTIME_MAY_IMPORT = {"tracegrad.ir.types"}


def _resolve(module: str, level: int, here: str) -> str:
    if level:   # relative: resolve against the file's package as installed (tracegrad.<layer>...)
        parts = here.split(".")[: -level]
        module = ".".join(parts + ([module] if module else []))
    return module


def _layer(module: str) -> int | None:
    """Which layer a module belongs to, or None for third-party/stdlib."""
    if not module.startswith("tracegrad"):
        return None
    parts = module.split(".")
    return FRONTEND if len(parts) == 1 else LAYERS.get(parts[1], FRONTEND)


def _imports(folder: str):
    """(file:line, imported module) for every import in a layer's folder, as installed."""
    for path in (ROOT / folder).rglob("*.py"):
        rel = path.relative_to(ROOT / folder).with_suffix("")
        here = ".".join(["tracegrad", folder, *rel.parts])
        if rel.name == "__init__":
            here = here.rsplit(".", 1)[0] + ".__init__"
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, here)
                for a in node.names:     # `from ..ir import types` reaches tracegrad.ir.types
                    yield where, (f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield where, a.name


def _is_module(name: str) -> bool:
    parts = name.split(".")
    if parts[0] != "tracegrad" or len(parts) < 3:
        return False
    folder = ROOT / (parts[1] if parts[1] in LAYERS else "tracegrad")
    rel = parts[2:] if parts[1] in LAYERS else parts[1:]
    return (folder.joinpath(*rel).with_suffix(".py")).exists() or folder.joinpath(*rel).is_dir()


@pytest.mark.parametrize("folder", list(LAYERS))
def test_lower_layers_do_not_import_higher_ones(folder):
    mine = LAYERS[folder]
    bad = [f"{where} ({mod})" for where, mod in _imports(folder)
           if (_layer(mod) or -1) > mine]
    assert not bad, f"{folder}/ imports from a higher layer at: {', '.join(bad)}"


def test_runtime_imports_only_the_ir_types():
    bad = [f"{where} ({mod})" for where, mod in _imports("runtime")
           if _layer(mod) == LAYERS["ir"] and not any(mod == m or mod.startswith(m + ".") for m in RUNTIME_MAY_IMPORT)]
    assert not bad, f"runtime/ reaches into the IR beyond its types at: {', '.join(bad)}"


def test_nothing_named_ir_or_runtime_is_importable_at_top_level():
    import importlib.util
    assert importlib.util.find_spec("tracegrad.ir") is not None
    for name in ("ir", "codegen", "runtime"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" not in (spec.origin or ""), name


@pytest.mark.parametrize("name", list(LAYERS))
def test_folder_names_refuse_import_from_the_repository_root(name):
    """From the repository root `import ir` would load a second op registry: it must say so."""
    out = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert f"import tracegrad.{name} instead" in out.stderr, out.stderr[-2000:]


def test_frontend_imports_its_own_modules_at_the_top():
    """An import of our own code inside a function body must say why (a `NOTE:` on its line or in
    the comment above it): the frontend's modules import one another at the top."""
    bad = []
    for path in (ROOT / "tracegrad").rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level > 0:
                    i = inner.lineno - 1
                    said = [lines[i]]
                    while i > 0 and lines[i - 1].strip().startswith("#"):   # the comment block above
                        i -= 1
                        said.append(lines[i])
                    if not any("NOTE:" in line for line in said):
                        bad.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert not bad, "imports inside functions without a reason: " + ", ".join(sorted(set(bad)))


def test_every_package_folder_is_installed():
    """setup.cfg lists the packages one by one (the layers map to tracegrad.<layer>): a folder left
    out is missing from a wheel, and `import tracegrad` fails there although it works here."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    folders = {"tracegrad": "tracegrad", **{layer: f"tracegrad.{layer}" for layer in LAYERS}}
    found = set()
    for top, name in folders.items():
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name,) + rel))
    assert found <= listed, sorted(found - listed)
