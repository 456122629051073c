"""One block through one backend, with the observation a protocol would feed the model:
what `mathsolve tools run` shows (for plugin authors and for debugging, so `Done`,
`<empty_execution>` or a filtered traceback appear byte for byte as in a transcript)."""

from __future__ import annotations

from typing import Any

from mathsolve.errors import UsageError


def run_block(name: str, code: str, *, protocol_name: str = "tora", timeout_s: float | None = None) -> dict[str, Any]:
    """Run `code` through backend `name`; the result and the protocol's observation text."""
    from mathsolve import registry
    from mathsolve.tools.base import Limits

    tools = registry.tools()
    if name not in tools:
        raise UsageError(f"unknown tool {name!r}; installed: {', '.join(sorted(tools)) or 'none'}")
    protocol = registry.protocol(protocol_name)
    tool = tools[name]
    if timeout_s is not None:
        from mathsolve.settings import SPECS

        try:
            timeout_s = SPECS["tool_timeout"].parse(timeout_s)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    limits = Limits(timeout_s=timeout_s or protocol.tool_timeout_s)
    if protocol.stateful_tool:
        opener = getattr(tool, "open_session", None)
        if opener is None:
            raise UsageError(f"the {protocol.name} protocol needs a backend with sessions; {name!r} has none")
        session = opener(limits)
        try:
            result = session.run(code)
        finally:
            session.close()
    else:
        result = tool.run(code, limits=limits)
    return {"tool": name, "protocol": protocol.name, "result": result.to_dict(), "observation": protocol.observation(result)}
