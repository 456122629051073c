"""6. End to end: the first N GSM8K test problems, mathsolve against the reference loop.

Both run greedy on the same model file with the same llama.cpp settings, each on its
own loaded model, in the same process; problem by problem, alternating which goes
first. mathsolve is `Solver.solve` as `mathsolve eval` calls it (qwen-tir, its round
and token limits, the tool router: warm backends for blocks that import what they
keep warm). The reference loop is bench/reference.py. Both are graded by the same
grader (`mathsolve eval`'s: percent forms on), outside the timed part. Speed is
problems per minute over the whole run and the median per-problem time ratio.
"""

from __future__ import annotations

from typing import Any

from bench.common import gsm8k, log, median, timed
from bench.reference import count_evaluations, reference_solve


def solve_all(solver, ref_llm, problems, evaluated: list[int]) -> list[dict[str, Any]]:
    """Each problem by mathsolve and by the reference loop, alternating which goes first."""
    from mathsolve.scoring.answer import extract_answer

    protocol = solver.protocol
    per_problem = []
    for i, problem in enumerate(problems):
        entry: dict[str, Any] = {"id": problem.id, "reference": problem.reference}

        def mathsolve_side():
            seconds, record = timed(lambda: solver.solve(problem.question))
            entry["mathsolve"] = {
                "s": seconds, "answer": record["answer"], "rounds": record["rounds"],
                "tool_calls": len(record["tool_calls"]), "generated": record["tokens"]["generated"],
                "evaluated": record["tokens"]["evaluated"], "tool_s": record["timings"]["tool_s"],
                "routes": [c["tool"] for c in record["tool_calls"]],
            }

        def reference_side():
            before = evaluated[0]
            seconds, out = timed(lambda: reference_solve(ref_llm, protocol, problem.question))
            entry["reference_loop"] = {
                "s": seconds, "answer": extract_answer(out["solution"], protocol.answer_style),
                "rounds": out["rounds"], "tool_calls": out["tool_calls"], "generated": out["generated"],
                "evaluated": evaluated[0] - before,
            }

        for side in ((mathsolve_side, reference_side) if i % 2 == 0 else (reference_side, mathsolve_side)):
            side()
        per_problem.append(entry)
        log(f"e2e {i + 1}/{len(problems)}: mathsolve {entry['mathsolve']['s']:.1f} s "
            f"({entry['mathsolve']['answer']!r}), reference {entry['reference_loop']['s']:.1f} s "
            f"({entry['reference_loop']['answer']!r}), truth {problem.reference!r}")
    return per_problem


def run(ctx, n_problems: int) -> dict[str, Any]:
    from mathsolve.scoring.grader import Grader

    problems = gsm8k(n_problems)
    with count_evaluations(ctx.raw) as evaluated:
        per_problem = solve_all(ctx.solver, ctx.raw, problems, evaluated)
    with Grader(percent=True) as grader:
        for entry in per_problem:
            for side in ("mathsolve", "reference_loop"):
                answer = entry[side]["answer"]
                entry[side]["correct"] = bool(answer) and grader.equal(answer, entry["reference"])
    summary = {}
    for side in ("mathsolve", "reference_loop"):
        runs = [e[side] for e in per_problem]
        total = sum(r["s"] for r in runs)
        summary[side] = {
            "correct": sum(r["correct"] for r in runs),
            "problems": len(runs),
            "problems_per_min": 60 * len(runs) / total if total else 0.0,
            "total_s": total,
            "tool_calls": sum(r["tool_calls"] for r in runs),
            "generated": sum(r["generated"] for r in runs),
            "evaluated": sum(r["evaluated"] for r in runs),
        }
    ms, ref = summary["mathsolve"], summary["reference_loop"]
    speed = median([e["reference_loop"]["s"] / e["mathsolve"]["s"] for e in per_problem])
    return {
        "summary": summary,
        "median_speed_ratio": speed,
        "same_answer": sum(e["mathsolve"]["answer"] == e["reference_loop"]["answer"] for e in per_problem),
        "met": ms["correct"] >= ref["correct"] and ms["problems_per_min"] >= ref["problems_per_min"],
        "problems": per_problem,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    ms, ref = result["summary"]["mathsolve"], result["summary"]["reference_loop"]
    n = ms["problems"]
    return [
        (f"6. GSM8K first {n}, accuracy (mathsolve / reference loop)",
         f"{ms['correct']}/{n} / {ref['correct']}/{n} (same answer on {result['same_answer']})",
         "mathsolve >= reference", "met" if ms["correct"] >= ref["correct"] else "NOT met"),
        (f"6. GSM8K first {n}, problems per minute (mathsolve / reference loop)",
         f"{ms['problems_per_min']:.2f} / {ref['problems_per_min']:.2f}; median per-problem speed "
         f"ratio {result['median_speed_ratio']:.3f}; tokens evaluated {ms['evaluated']} / {ref['evaluated']}",
         "mathsolve >= reference", "met" if ms["problems_per_min"] >= ref["problems_per_min"] else "NOT met"),
    ]
