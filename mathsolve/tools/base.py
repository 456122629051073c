"""The tool contract: what a tool plugin implements, the limits it runs under, and what
it returns.

A tool runs one code block the model wrote and returns a ToolResult; the protocol
then turns the result into the exact observation text its model was trained on
(ToRA's `Done`, MathCoder's `<empty_execution>` ...), so a tool never formats.

Stateful backends: a Tool MAY also implement `open_session(limits) -> ToolSession`,
one interpreter kept for all the blocks of a problem (protocols trained with a
Jupyter kernel need it). The caller closes the session when the problem ends.

These are value types and protocols only: nothing here runs code (the sandbox does).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Limits:
    """Resource limits of one execution.

    ``file_size_mb`` is the largest file the code may write (RLIMIT_FSIZE); with a
    mount namespace it also caps the total size of the private work dir.
    ``processes`` caps the tasks (processes and threads) alive at once, through a
    cgroup or RLIMIT_NPROC, which is what stops fork bombs.

    In a ``PythonSession``, ``timeout_s``, ``cpu_s`` and ``output_bytes`` apply to
    each block; the others to the session's worker for its whole life.
    """

    timeout_s: float = 5.0  # wall clock of the code (prelude included)
    cpu_s: float | None = None  # default: timeout_s + 1
    memory_mb: int = 4096  # address-space limit of each process of the sandbox
    output_bytes: int = 1_000_000  # stdout+stderr cap; beyond: "output-limit", killed
    file_size_mb: int = 64  # RLIMIT_FSIZE
    open_files: int = 256  # RLIMIT_NOFILE
    network: bool = False  # False: new network namespace when the kernel allows it
    processes: int = 64  # tasks alive at once (cgroup pids.max or RLIMIT_NPROC)

    def __post_init__(self) -> None:
        # Checked here, not only in the settings: a plugin builds Limits too, and a NaN or
        # negative timeout would otherwise surface as a crash inside the first block.
        for name in ("timeout_s", "cpu_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 10**7):
                raise ValueError(f"Limits.{name} must be a finite number of seconds above 0, got {value!r}")
        for name in ("memory_mb", "output_bytes", "file_size_mb", "open_files", "processes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 2**40:
                raise ValueError(f"Limits.{name} must be a positive whole number, got {value!r}")
        if self.open_files < 16:  # an interpreter needs a handful before the code opens any
            raise ValueError(f"Limits.open_files must be at least 16, got {self.open_files!r}")

    def effective_cpu_s(self) -> float:
        return self.timeout_s + 1 if self.cpu_s is None else self.cpu_s



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

    @classmethod
    def from_exec(cls, tool: str, result: Any) -> ToolResult:
        """A ToolResult from the sandbox's ExecResult (`mathsolve.sandbox`): the fields
        both share are copied, so a field added to both keeps flowing to the loop."""
        shared = {f.name for f in fields(cls)} - {"tool"}
        return cls(tool=tool, **{k: v for k, v in asdict(result).items() if k in shared})


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

    Optional (not part of the isinstance check):
    - `open_session(limits) -> ToolSession`, for a backend that can keep state across
      blocks (see the module docstring);
    - `imports: tuple[str, ...]`, the top-level modules the backend keeps warm, so the
      router sends blocks importing them there;
    - `claims(code, language) -> bool`, to claim blocks outright (see ToolRouter).
    """

    name: str
    description: str

    def run(self, code: str, *, limits: Limits, prelude: str = "") -> ToolResult: ...
