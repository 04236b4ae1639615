"""The house keeps its shape: each package exports what it says, and big modules say why."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import edge

ROOT = Path(edge.__file__).parent
MAX_LINES = 400
REASON = "Why one module of over 400 lines"


def packages() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(edge.__path__, "edge.") if m.ispkg)


def test_every_package_exports_a_public_surface_that_resolves():
    lazy = [name for name in packages() if hasattr(importlib.import_module(name), "__all__")]
    assert {"edge.audio", "edge.wake", "edge.pipeline", "edge.sinks", "edge.upload",
            "edge.privacy", "edge.activations", "edge.service", "edge.hardware", "edge.mqtt",
            "edge.compose", "edge.config"} <= set(lazy)
    for name in lazy:
        package = importlib.import_module(name)
        for public in package.__all__:
            assert getattr(package, public) is not None, f"{name}.{public}"


def test_a_module_over_400_lines_says_at_its_top_why():
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert REASON in doc, f"{path.relative_to(ROOT.parent)} is over {MAX_LINES} lines"


def test_no_two_modules_in_one_package_differ_by_a_suffix():
    for package in [ROOT, *(p for p in ROOT.rglob("*") if (p / "__init__.py").exists())]:
        names = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
        for a in names:
            for b in names:
                assert a == b or not b.startswith(a), f"{package.name}: {a} and {b}"
