"""3. Tool latency per block: the released ToRA blocks through the python, sympy and
numeric backends, cold and warm (bench/tool_latency.py does the measuring)."""

from __future__ import annotations

from typing import Any

from bench import tool_latency


def run(ctx, reps: int, plain: int) -> dict[str, Any]:
    if not tool_latency.REPLAY_DIR.is_dir():
        return {"skipped": f"no replay data at {tool_latency.REPLAY_DIR}"}
    blocks = tool_latency.load_blocks(tool_latency.REPLAY_DIR, plain)
    backends = tool_latency.BACKENDS
    try:
        measured = tool_latency.run(blocks, backends, reps)
    except SystemExit as exc:  # a backend plugin is not installed
        return {"skipped": str(exc)}
    return {
        "reps": reps,
        "blocks": len(blocks),
        "summary": tool_latency.summarize(blocks, measured, backends),
        "startup_s": measured["startup_s"],
        "disagreements": len(measured["disagreements"]),
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if "skipped" in result:
        return [("3. tool latency per block", "skipped: " + result["skipped"], "info", "")]
    out = []
    for category, row in result["summary"].items():
        cells = ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in row["median_s"].items())
        out.append((f"3. tool latency per block, {category} ({row['blocks']} blocks)", cells, "info", ""))
    starts = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in result["startup_s"].items())
    out.append(("3. first call per backend (warm zygote start, once per process)", starts, "info", ""))
    return out
