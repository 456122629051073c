"""The declared plugin API: `mathsolve.plugin` is the one module a plugin imports.

Every plugin under plugins/ (the built-in tool backends and the example third-party one)
and every Python snippet of docs/plugins.md import nothing else of mathsolve, and loading
a plugin does not load the sandbox.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_FILES = sorted(path for path in (ROOT / "plugins").glob("*/mathsolve_*/**/*.py"))


def mathsolve_imports(source: str) -> list[str]:
    """Every module of mathsolve a piece of code imports (at any depth)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
    return [name for name in found if name == "mathsolve" or name.startswith("mathsolve.")]


def test_there_are_plugins_to_check() -> None:
    assert len(PLUGIN_FILES) >= 4


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=[p.relative_to(ROOT).as_posix() for p in PLUGIN_FILES])
def test_a_plugin_imports_only_the_plugin_api(path: Path) -> None:
    imports = mathsolve_imports(path.read_text(encoding="utf-8"))
    assert imports and set(imports) == {"mathsolve.plugin"}, imports


def test_the_guides_snippets_import_only_the_plugin_api() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    snippets = re.findall(r"```python\n(.*?)```", guide, re.S)
    imported = [name for snippet in snippets for line in snippet.splitlines()
                if line.strip().startswith(("from mathsolve", "import mathsolve"))
                for name in mathsolve_imports(line.strip())]
    assert imported and set(imported) == {"mathsolve.plugin"}, imported


def test_every_name_the_api_declares_exists() -> None:
    import mathsolve.plugin as api

    missing = [name for name in api.__all__ if getattr(api, name, None) is None]
    assert missing == []


def test_loading_the_plugins_imports_no_sandbox() -> None:
    """Discovering plugins (what every command does at start) must not load the sandbox:
    it loads when a tool first runs."""
    code = ("import sys\nfrom mathsolve.plugins import get_plugin_manager\n"
            "pm = get_plugin_manager()\n"
            "assert not pm.failed(), [(i.name, i.error) for i in pm.failed()]\n"
            "print(sorted(name for name in sys.modules if name.startswith('mathsolve.sandbox')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
