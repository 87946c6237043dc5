"""Imports run one way between the modules that used to import each other: ``data.clips`` -> ``data.styled`` ->
``data.synthetic``; ``export.outputs`` -> ``export.overlay``; ``run`` -> ``replay`` (imports inside functions
count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sam3video"


def imported(module: str) -> set[str]:
    """The ``sam3video`` modules ``module`` imports anywhere in its file (top level or inside functions)."""
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    package = module.rsplit(".", 1)[0].split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("sam3video")}


@pytest.mark.parametrize("upper, lower", [
    ("sam3video.data.styled", "sam3video.data.synthetic"),
    ("sam3video.data.clips", "sam3video.data.styled"),
    ("sam3video.export.outputs", "sam3video.export.overlay"),
    ("sam3video.run", "sam3video.replay"),
])
def test_imports_run_one_way(upper, lower):
    assert lower in imported(upper)
    assert upper not in imported(lower)
