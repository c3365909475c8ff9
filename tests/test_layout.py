"""The house rules of the layout (docs/architecture.md), checked on the tree itself.

- the core never imports Snakemake (it is used by benchmarks, tests and notebooks);
- every workflow script is a thin door: at most 25 lines, one call into the stage API;
- no core module above 600 lines (one idea per module). Function complexity (McCabe
  <= 15) is ruff's C901, configured in pyproject.toml and run by ``make lint``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = sorted((REPO / "facerhythm_core").rglob("*.py"))
SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))
MAX_MODULE_LINES = 600
MAX_SCRIPT_LINES = 25


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_core_never_imports_snakemake():
    assert CORE, "no core modules found"
    offenders = [str(p.relative_to(REPO)) for p in CORE if "snakemake" in _imported_modules(p)]
    assert offenders == []


def test_no_core_module_above_600_lines():
    long = {str(p.relative_to(REPO)): n for p in CORE if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these along their seams: {long}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_is_a_thin_door_into_the_stage_api(script):
    lines = script.read_text().splitlines()
    assert len(lines) <= MAX_SCRIPT_LINES, (
        f"{script.name}: {len(lines)} lines; move the logic into facerhythm_core.stages"
    )
    calls = [
        node
        for node in ast.walk(ast.parse("\n".join(lines)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "stages"
    ]
    assert len(calls) == 1, f"{script.name}: {len(calls)} calls into the stage API, expected exactly one"
