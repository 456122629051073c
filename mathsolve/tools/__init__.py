"""Tool backends: the contract plugins implement (mathsolve.tools.base) and the router
that picks a backend for each block (mathsolve.tools.router)."""

from mathsolve.tools.base import Limits, Tool, ToolResult, ToolSession
from mathsolve.tools.router import GENERIC_LANGUAGES, Route, ToolRouter, imported_modules

__all__ = ["GENERIC_LANGUAGES", "Limits", "Route", "Tool", "ToolResult", "ToolRouter", "ToolSession", "imported_modules"]
