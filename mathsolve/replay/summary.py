"""What a replay returns: the summary, its mismatches, the --mismatches file and --min-rate."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathsolve.errors import UsageError
from mathsolve.files.outputs import check_replaceable, write_jsonl

__all__ = ["MISMATCH_KEYS", "Mismatch", "ReplaySummary", "check_mismatches_destination", "rate_threshold",
           "write_mismatches"]


@dataclass
class Mismatch:
    record: Any
    line: int
    block: int
    kind: str
    recorded: str
    ours: str
    status: str  # our run's ToolResult.status
    code: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReplaySummary:
    file: str
    protocol: str
    release: str  # "first", "current", or "as recorded" (mathsolve records only)
    tool: str
    jobs: int
    records: int = 0
    blocks: int = 0
    matched: int = 0
    elapsed_s: float = 0.0
    formats: Counter = field(default_factory=Counter)
    mismatches: list[Mismatch] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "line N: why"
    warnings: list[str] = field(default_factory=list)  # how the file was decoded: replaced bytes
    release_scores: dict[str, int] = field(default_factory=dict)  # --release auto: matches per release

    @property
    def rate(self) -> float:
        return self.matched / self.blocks if self.blocks else 0.0

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def classes(self) -> dict[str, int]:
        return dict(Counter(m.kind for m in self.mismatches).most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "formats": dict(self.formats),
            "protocol": self.protocol,
            "release": self.release,
            "release_scores": self.release_scores,
            "tool": self.tool,
            "jobs": self.jobs,
            "records": self.records,
            "blocks": self.blocks,
            "matched": self.matched,
            "mismatched": len(self.mismatches),
            "rate": self.rate,
            "elapsed_s": round(self.elapsed_s, 3),
            "blocks_per_s": round(self.blocks_per_s, 3),
            "classes": self.classes,
            "errors": len(self.errors),
            "error_messages": self.errors,
        }


# The keys every --mismatches line holds (Mismatch.to_dict): how an earlier mismatches
# file is told from a file mathsolve must not overwrite.
MISMATCH_KEYS = frozenset({"record", "line", "block", "kind", "recorded", "ours", "status", "code"})


def check_mismatches_destination(destination: Path, source: Path) -> None:
    """Refuse a --mismatches path before replaying (see outfile.check_replaceable): UsageError."""
    check_replaceable(Path(destination), keys=MISMATCH_KEYS, sources=[Path(source)], option="--mismatches")


def write_mismatches(summary: ReplaySummary, destination: Path) -> None:
    """Every mismatch as one JSON line (record, line, block, kind, recorded, ours, status, code).

    The file is replaced atomically; it may not be the replayed file, a directory, or an
    existing file that is not an earlier mismatches file (UsageError). OSError -> IOFailure.
    """
    write_jsonl((mismatch.to_dict() for mismatch in summary.mismatches), Path(destination), keys=MISMATCH_KEYS,
                sources=[Path(summary.file)], option="--mismatches")


def rate_threshold(value: float | None) -> float | None:
    """--min-rate as a fraction: 0.98 and 98 both mean 98%."""
    if value is None:
        return None
    if not 0 <= value <= 100:
        raise UsageError(f"--min-rate must be a fraction (0.98) or a percentage (98), not {value}")
    return value / 100 if value > 1 else value
