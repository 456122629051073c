"""7. Tool-heavy replay: released ToRA solutions through the real loop, no generation.

A scripted engine returns each recorded round of a released ToRA-Code-34B solution
(the text up to its "```output", where the model stopped), so `Solver.solve` runs the
real loop, protocol (`tora`), router, sandbox and record building, and only the
model's time is missing. Three ways, interleaved per problem with a rotating order:
every block in a new interpreter (`cold`, the baseline `bench.common.ColdPython`),
every block on the `python` backend (`--tool python`: forked from a warm interpreter
that imported nothing), and the default routing, which also sends blocks importing
sympy/numpy/mpmath to the backends that keep those warm. The zygotes start before
timing (once per process). The loop's own time per problem is the solve time minus
the time spent in tools.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import ColdPython, interleaved, median, timed
from bench.tool_latency import REPLAY_DIR

REPLAY_FILE = "tora-code-34b-v1.0.gsm8k.jsonl"


def recorded_rounds(text: str) -> list[str]:
    """The rounds of a released solution as the model wrote them, each ending with the
    stop string it stopped at (the scripted session cuts there, as llama.cpp would)."""
    from mathsolve.scoring.records import OUTPUT_BLOCK

    rounds, pos = [], 0
    for match in OUTPUT_BLOCK.finditer(text):
        rounds.append(text[pos:match.start()] + "```output")
        pos = match.end() + (text[match.end():match.end() + 1] == "\n")
    rounds.append(text[pos:])
    return rounds


def load(path: Path, limit: int) -> list[tuple[str, list[str]]]:
    problems = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and (limit <= 0 or len(problems) < limit):
                record = json.loads(line)
                problems.append((record["question"], recorded_rounds(record["code"][0])))
    return problems


def run(ctx, reps: int, limit: int) -> dict[str, Any]:
    from mathsolve.api import Solver
    from mathsolve.engines.scripted import ScriptedEngine

    path = REPLAY_DIR / REPLAY_FILE
    if not path.is_file():
        return {"skipped": f"no replay file {path}"}
    problems = load(path, limit)
    def solver(tool: str | None):
        return Solver(engine=ScriptedEngine([]), protocol="tora", tool=tool, max_tokens=10**6)

    solvers = {"cold": solver("python"), "python": solver("python"), "routed": solver(None)}
    solvers["cold"].tools["python"] = ColdPython()  # the explicit route takes the tool by name
    for each in solvers.values():  # start the warm zygotes outside the timing
        for tool in each.tools.values():
            tool.run("pass", limits=_limits(each))

    per_problem: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in solvers}
    for question, rounds in problems:
        def solve(solver, question=question, rounds=rounds):
            def go():
                solver.engine = ScriptedEngine([rounds])
                seconds, record = timed(lambda: solver.solve(question))
                return {"s": seconds, "tool_s": record["timings"]["tool_s"],
                        "calls": [(c["tool"], c["observation"]) for c in record["tool_calls"]]}
            return go
        runs = interleaved({name: solve(s) for name, s in solvers.items()}, reps)
        for name in solvers:
            per_problem[name].append(runs[name])

    out: dict[str, Any] = {"file": REPLAY_FILE, "problems": len(problems), "reps": reps}
    for name, problem_runs in per_problem.items():
        seconds = [median([r["s"] for r in runs]) for runs in problem_runs]
        loop = [median([r["s"] - r["tool_s"] for r in runs]) for runs in problem_runs]
        out[name] = {
            "median_s_per_problem": median(seconds),
            "mean_s_per_problem": sum(seconds) / len(seconds),
            "loop_ms_per_problem": 1000 * median(loop),
            "blocks": sum(len(runs[0]["calls"]) for runs in problem_runs),
            "backends": dict(Counter(tool for runs in problem_runs for tool, _ in runs[0]["calls"])),
        }
    for each in solvers.values():
        each.close()
    out["ways"] = list(solvers)
    cold = per_problem["cold"]
    for name in out["ways"][1:]:
        out[name]["same_observations_as_cold"] = sum(
            [o for _, o in c[0]["calls"]] == [o for _, o in w[0]["calls"]] for c, w in zip(cold, per_problem[name]))
        out[name]["speedup_vs_cold"] = out["cold"]["mean_s_per_problem"] / out[name]["mean_s_per_problem"]
    return out


def _limits(solver):
    from mathsolve.sandbox import Limits

    return Limits(timeout_s=solver.protocol.tool_timeout_s, memory_mb=solver.settings.tool_memory_mb)


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    if "skipped" in result:
        return [("7. tool-heavy replay", "skipped: " + result["skipped"], "info", "")]
    cells = ", ".join(f"{name} {result[name]['mean_s_per_problem']:.3f}" for name in result["ways"])
    blocks = result["cold"]["blocks"]
    loop = result["routed"]["loop_ms_per_problem"]
    return [(
        f"7. ToRA replay through the loop, {result['problems']} problems ({blocks} blocks), mean s/problem",
        f"{cells}; loop's own {loop:.1f} ms/problem", "info", "",
    )]
