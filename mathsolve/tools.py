"""Tool backends: the interface plugins implement, the result type, and the router.

A tool runs one code block the model wrote and returns a ToolResult; the protocol
then turns the result into the exact observation text its model was trained on
(ToRA's `Done`, MathCoder's `<empty_execution>` ...), so a tool never formats.

Stateful backends: a Tool MAY also implement `open_session(limits) -> ToolSession`,
one interpreter kept for all the blocks of a problem (protocols trained with a
Jupyter kernel need it). The caller closes the session when the problem ends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mathsolve.errors import UsageError

if TYPE_CHECKING:
    from mathsolve.sandbox import Limits

@dataclass
class ToolResult:
    tool: str
    status: str  # "ok" | "error" | "timeout" | "memory" | "output-limit"
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # last traceback line when status == "error"
    duration_s: float = 0.0
    # The full traceback when the code raised (frames of the code in
    # mathsolve.sandbox.CODE_FILENAME, with their source lines); None otherwise.
    traceback: str | None = None
    # Sessions: repr() of the block's final bare expression when not None (a notebook's Out).
    display: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class ToolSession(Protocol):
    """One stateful interpreter for the blocks of one problem (from `open_session`).

    `run` executes a block in the state the earlier blocks left (limits as given to
    `open_session`, per block); `close` ends it, idempotently, and must be called.
    """

    def run(self, code: str) -> ToolResult: ...

    def close(self) -> None: ...


@runtime_checkable
class Tool(Protocol):
    """What a tool plugin registers: a name, a one-line description and `run`.

    Optional (not part of the isinstance check): `open_session(limits) -> ToolSession`
    for a backend that can keep state across blocks; see the module docstring.
    """

    name: str
    description: str

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult: ...


class ToolRouter:
    """Chooses the backend for each block.

    Order: an explicit choice (`--tool NAME`), then the block's fence language when a
    backend of that name exists (```sympy -> `sympy`), then the protocol's default.
    """

    def __init__(self, tools: dict[str, Tool], *, explicit: str | None = None) -> None:
        self.tools = tools
        if explicit is not None and explicit not in tools:
            raise UsageError(
                f"unknown tool {explicit!r}; installed: {', '.join(sorted(tools)) or 'none'}"
            )
        self.explicit = explicit

    def choose(self, *, fence_language: str | None, default: str | None) -> Tool:
        if self.explicit:
            return self.tools[self.explicit]
        if fence_language and fence_language in self.tools:
            return self.tools[fence_language]
        if default and default in self.tools:
            return self.tools[default]
        raise UsageError(
            f"no tool backend for this protocol (wanted {default!r}); "
            "install or enable a tool plugin (see `mathsolve plugins`)"
        )
