"""The renderers' own cost per token at GPU speed, without a GPU.

On the CPU here a token takes ~25 ms and any renderer hides in it; on a GPU it takes
~2 ms, and a renderer that spends 100 us per token costs 5% of the throughput. This
replays released ToRA solutions (prose, code blocks, outputs) through each renderer in
token-sized pieces (4 characters, about a token of English or code) at a fixed pace of
one piece every `PACE_S`, busy-waiting between pieces as a generating thread would be
busy, and adds up the time spent inside the renderer's calls. The throttled renderer
sees the same clock it would see behind a fast GPU.

Reported: microseconds per token per renderer, and the throughput ratio it implies at
that pace, pace / (pace + cost), the figure section 1 measures with a real model.
"""

from __future__ import annotations

import io
import time
from typing import Any

from bench.common import interleaved, median

PACE_S = 0.002  # 500 tokens/s: the 1.5B default model's shape generated ~520 tok/s on an H200
PIECE = 4  # characters per simulated token
SOLUTIONS = 12
TARGET = 0.95


def renderers():
    """Factories of the renderers the bench drives: plain (pipes) and rich on a terminal
    (a Console forced to be one, writing into memory, so the live code panel redraws)."""
    from rich.console import Console

    from mathsolve.cli.render import PlainRenderer, RichRenderer

    return {
        "plain": lambda: PlainRenderer(io.StringIO()),
        "rich": lambda: RichRenderer(Console(file=io.StringIO(), force_terminal=True, width=100, height=40)),
    }


def _record(tokens: int) -> dict[str, Any]:
    return {"answer": "42", "status": "finished", "rounds": 1, "tokens": {"generated": tokens},
            "timings": {"tokens_per_s": 1 / PACE_S, "tool_s": 0.0, "total_s": tokens * PACE_S}}


def replay(make, rounds: list[list[str]]) -> dict[str, float]:
    renderer = make()
    spent, tokens = 0.0, 0
    clock = time.perf_counter
    for round_index, text in enumerate(rounds):
        for i in range(0, len(text), PIECE):
            due = clock() + PACE_S
            t0 = clock()
            renderer.on_text(text[i : i + PIECE])
            spent += clock() - t0
            tokens += 1
            while clock() < due:
                pass
        t0 = clock()
        renderer.on_round_end(round_index)
        spent += clock() - t0
    t0 = clock()
    renderer.on_finish(_record(tokens))
    spent += clock() - t0
    return {"us_per_token": 1e6 * spent / tokens, "tokens": tokens}


def load_rounds(limit: int) -> list[list[str]] | None:
    from bench.tool_latency import REPLAY_DIR
    from bench.tool_replay import REPLAY_FILE, load

    path = REPLAY_DIR / REPLAY_FILE
    if not path.is_file():
        return None
    return [rounds for _, rounds in load(path, limit)]


def run(reps: int) -> dict[str, Any] | None:
    solutions = load_rounds(SOLUTIONS)
    if solutions is None:
        return None
    makers = renderers()
    variants = {name: (lambda make=make: [replay(make, rounds) for rounds in solutions])
                for name, make in makers.items()}
    runs = interleaved(variants, reps, "renderer cost", warmup=True)
    out: dict[str, Any] = {"pace_s": PACE_S, "solutions": len(solutions),
                           "tokens": sum(r["tokens"] for r in runs["plain"][0])}
    for name, results in runs.items():
        cost = median([sum(r["us_per_token"] * r["tokens"] for r in rs) / out["tokens"] for rs in results])
        out[name] = {"us_per_token": cost, "ratio_at_pace": PACE_S / (PACE_S + cost / 1e6)}
    out["met"] = all(out[name]["ratio_at_pace"] >= TARGET for name in makers)
    return out


def rows(result: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    if not result:
        return []
    costs = ", ".join(f"{name} {result[name]['us_per_token']:.0f} us/token (ratio {result[name]['ratio_at_pace']:.3f})"
                      for name in ("plain", "rich"))
    return [(f"1. renderer cost at {1 / result['pace_s']:.0f} tok/s, {result['solutions']} ToRA solutions replayed "
             f"({result['tokens']} tokens)", costs, f">= {TARGET}", "met" if result["met"] else "NOT met")]
