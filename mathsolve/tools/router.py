"""The router: which tool backend runs a block (see ToolRouter for the rules)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from mathsolve.errors import UsageError
from mathsolve.tools.base import Tool

# Fence languages that name the generic language rather than a backend: a ```python
# block may run on any Python backend, so routing goes on to claims and imports.
GENERIC_LANGUAGES = frozenset({"python", "py", "python3"})


@dataclass(frozen=True)
class Route:
    """The backend chosen for one block, and which rule chose it."""

    tool: Tool
    reason: str  # "explicit" | "fence" | "claim" | "imports" | "default"


def imported_modules(code: str) -> list[str]:
    """Top-level module names a block imports, in order (`import sympy as sp` -> sympy).

    Code that does not parse (the model's syntax error) is read line by line instead.
    """
    names: list[str] = []
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        for match in _IMPORT_LINE.finditer(code):
            if match.group(1):  # from X import ...
                names.append(match.group(1).split(".")[0])
            else:  # import X as Y, Z
                names += [part.split()[0].split(".")[0] for part in match.group(2).split(",") if part.strip()]
    else:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.append(node.module.split(".")[0])
    seen: dict[str, None] = {}
    for name in names:
        if name:
            seen.setdefault(name, None)
    return list(seen)


_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+[^\n]*|import[ \t]+([\w., \t]+))", re.M)


class ToolRouter:
    """Chooses the backend for each block. The rules, in order:

    1. an explicit choice (`--tool NAME`);
    2. the block's fence language when it names a backend (```sympy); ```python is the
       generic language and decides nothing;
    3. a plugin's claim: a backend with `claims(code, language) -> bool` that says yes
       (backends asked in name order, so the result never depends on install order;
       one that raises is skipped);
    4. what the code imports: the backend whose `imports` (the modules it keeps warm)
       cover most of the block's imports, ties to the first by name;
    5. the protocol's default backend.
    Stateful protocols (one session per problem) use only rules 1 and 5, so every
    block of a problem meets the same state.
    """

    def __init__(self, tools: dict[str, Tool], *, explicit: str | None = None) -> None:
        self.tools = tools
        if explicit is not None and explicit not in tools:
            raise UsageError(
                f"unknown tool {explicit!r}; installed: {', '.join(sorted(tools)) or 'none'}"
            )
        self.explicit = explicit

    def route(self, code: str, *, fence_language: str | None, default: str | None, stateful: bool = False) -> Route:
        if self.explicit:
            return Route(self.tools[self.explicit], "explicit")
        if not stateful:
            language = (fence_language or "").lower()
            if language and language not in GENERIC_LANGUAGES and language in self.tools:
                return Route(self.tools[language], "fence")
            claimed = self._claimed(code, fence_language)
            if claimed is not None:
                return Route(claimed, "claim")
            warm = self._by_imports(code)
            if warm is not None:
                return Route(warm, "imports")
        if default and default in self.tools:
            return Route(self.tools[default], "default")
        raise UsageError(
            f"no tool backend for this protocol (wanted {default!r}); "
            "install or enable a tool plugin (see `mathsolve plugins`)"
        )

    def choose(self, *, fence_language: str | None, default: str | None, code: str = "") -> Tool:
        return self.route(code, fence_language=fence_language, default=default).tool

    def _in_name_order(self) -> list[Tool]:
        return [self.tools[name] for name in sorted(self.tools)]

    def _claimed(self, code: str, language: str | None) -> Tool | None:
        for tool in self._in_name_order():
            claims = getattr(tool, "claims", None)
            if claims is None:
                continue
            try:
                if claims(code, language):
                    return tool
            except Exception:  # noqa: BLE001 - a broken plugin must not stop the solve
                continue
        return None

    def _by_imports(self, code: str) -> Tool | None:
        wanted = set(imported_modules(code))
        if not wanted:
            return None
        best, best_score = None, 0
        for tool in self._in_name_order():
            score = len(wanted & set(getattr(tool, "imports", ()) or ()))
            if score > best_score:
                best, best_score = tool, score
        return best
