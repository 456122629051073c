"""9. Voting and batches on the batched engine (mathsolve.core.voting, mathsolve.core.parallel):
what decoding the samples of `-n 8`, or 8 problems, together buys over one at a time.

(a) One question, `-n 8`: GSM8K #0 solved once greedily (`Solver.solve`, today's engine),
    voted over 8 samples one at a time (the plain engine, samples in order) and over 8
    samples decoded together (an 8-slot BatchedEngine), every sample run to its end
    (`--early-stop off`), and as `mathsolve "q" -n 8` runs by default (together, early
    stop `auto`: the same vote by construction), interleaved for `reps` repetitions.
    Reported: median wall times and their ratios, and whether the batched vote equals the sequential one with the same
    seeds (its answer, and how many of the 8 sample texts are the same: on a quantized model
    batches may part at near ties, see section 8).
(b) Eval, N GSM8K problems greedy, 1 at a time (the plain engine) against 8 in flight
    (`--concurrency 8` on an 8-slot BatchedEngine), both through `run_batch` as `mathsolve
    eval` runs them, in rotating order, `pairs` side-by-side pairs. Reported: problems per minute, the
    median of the pairs' ratios, accuracy, answers that differ, the engine's counters.
(c) Early stop, the same N problems with `-n 8` on the 8-slot engine: every sample to its
    end (`off`), the default (`auto`: until the leader cannot be overtaken) and
    `--early-stop 4` (AIMO-3's public pipeline: 8 attempts, stop at 4 agreeing), or the
    rules chosen (`off` always), the order rotating per problem. Reported: the share of sample tokens saved against `off` (sum of
    every sample's generated tokens, cancelled ones counting what they wrote), wall time,
    majority accuracy, winners that differ from `off`.
(d) Memory: peak RSS (VmHWM) of a child process that loads the model and solves GSM8K #0
    once (one sequence) or votes over it with 8 sequences (`python -m bench.voting MODEL K`),
    beside the model file plus the KV cache of 1 or 8 contexts (bench/memory.py's formula).

N is `--voting-problems` (20), the repetitions of (a) `--voting-reps` (3). All variants use
the section's model file, protocol and settings (threads, --max-tokens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.common import MODEL_PROTOCOL, ROOT, gsm8k, interleaved, log, median, timed
from bench.overhead import overrides

K = 8
AGREE = 4


def _solver(ctx_or_model, *, threads=None, max_tokens=None, **flags):
    from mathsolve.api import Solver

    model = str(getattr(ctx_or_model, "model_path", ctx_or_model))
    threads = threads if threads is not None else getattr(ctx_or_model, "threads", None)
    max_tokens = max_tokens if max_tokens is not None else getattr(ctx_or_model, "max_tokens", None)
    extra = {"max_tokens": max_tokens} if max_tokens else {}
    return Solver(model=model, protocol=MODEL_PROTOCOL, threads=threads, **extra, **flags)


def _sample_tokens(record: dict[str, Any]) -> int:
    return sum(s["tokens"]["generated"] for s in record.get("samples") or [record])


# -- (a) one question ---------------------------------------------------------------------------


def one_question(ctx, grader, reps: int) -> dict[str, Any]:
    from mathsolve.core.batch import solve_problem

    problem = gsm8k(1)[0]
    sequential = _solver(ctx, early_stop="off")  # sessions=1: the plain engine, samples in order
    together = _solver(ctx, early_stop="off", sessions=K)

    def by_default():  # what `mathsolve "q" -n 8` does: the same engine, early stop auto
        with overrides(together, early_stop="auto"):
            return solve_problem(together, problem, samples=K, grader=grader)

    try:
        variants = {
            "greedy": lambda: timed(lambda: ctx.solver.solve(problem.question)),
            f"-n {K} one at a time": lambda: timed(lambda: solve_problem(sequential, problem, samples=K,
                                                                         grader=grader)),
            f"-n {K} together": lambda: timed(lambda: solve_problem(together, problem, samples=K, grader=grader)),
            f"-n {K} together, early stop auto": lambda: timed(by_default),
        }
        runs = interleaved(variants, reps, "voting (a)")
        slots = together.parallel
    finally:
        sequential.close()
        together.close()
    seconds = {name: median([s for s, _ in values]) for name, values in runs.items()}
    pairs = list(zip(runs[f"-n {K} one at a time"], runs[f"-n {K} together"]))
    same_answer = sum(a["answer"] == b["answer"] for (_, a), (_, b) in pairs)
    same_texts = [sum(x["transcript"] == y["transcript"] for x, y in zip(a["samples"], b["samples"]))
                  for (_, a), (_, b) in pairs]
    return {
        "question": problem.id, "samples": K, "slots": slots, "reps": reps, "median_s": seconds,
        "per_run_s": {name: [round(s, 3) for s, _ in values] for name, values in runs.items()},
        "together_vs_greedy": seconds[f"-n {K} together"] / seconds["greedy"],
        "auto_vs_greedy": seconds[f"-n {K} together, early stop auto"] / seconds["greedy"],
        "together_vs_one_at_a_time": seconds[f"-n {K} one at a time"] / seconds[f"-n {K} together"],
        "same_vote": same_answer, "same_sample_texts": same_texts,
        "answers": {name: [r["answer"] for _, r in values] for name, values in runs.items()},
        "reference": problem.reference,
    }


# -- (b) eval, 8 in flight -------------------------------------------------------------------------


def _batch(solver, problems, grader, concurrency: int) -> dict[str, Any]:
    from mathsolve.core.batch import run_batch

    records: dict[str, dict[str, Any]] = {}
    seconds, stats = timed(lambda: run_batch(problems, solver, out=None, grader=grader, concurrency=concurrency,
                                             on_record=lambda record, _: records.__setitem__(record["id"], record)))
    return {"s": seconds, "problems_per_min": 60 * len(problems) / seconds, "correct": stats.correct,
            "graded": stats.graded, "answers": {i: r["answer"] for i, r in records.items()},
            "generated": sum(r["tokens"]["generated"] for r in records.values())}


def in_flight(ctx, grader, problems, reps: int = 2) -> dict[str, Any]:
    together = _solver(ctx, sessions=K)  # concurrency K x 1 sample: K slots
    try:
        runs = interleaved({"1 at a time": lambda: _batch(ctx.solver, problems, grader, 1),
                            f"{K} in flight": lambda: _batch(together, problems, grader, K)}, reps, "voting (b)")
        counters = dict(together.engine.counters)
    finally:
        together.close()
    # Each pair ran side by side: the speedup is the median of the pairs' ratios.
    ratios = [m["problems_per_min"] / o["problems_per_min"] for o, m in zip(runs["1 at a time"], runs[f"{K} in flight"])]
    one, many = runs["1 at a time"][0], runs[f"{K} in flight"][0]
    differ = sorted(i for i in one["answers"] if one["answers"][i] != many["answers"].get(i))
    return {"problems": len(problems), "reps": reps, "runs": {name: r[0] for name, r in runs.items()},
            "per_run": {name: [round(r["problems_per_min"], 2) for r in rs] for name, rs in runs.items()},
            "speedup": median(ratios), "speedups": [round(r, 3) for r in ratios], "answers_differ": differ,
            "engine_counters": counters}


# -- (c) early stop --------------------------------------------------------------------------------


def early_stop(ctx, grader, problems, rules: dict[str, str]) -> dict[str, Any]:
    from mathsolve.core.batch import solve_problem

    solver = _solver(ctx, sessions=K)
    per_rule: dict[str, list[dict[str, Any]]] = {name: [] for name in rules}
    try:
        names = list(rules)
        for i, problem in enumerate(problems):
            for name in names[i % len(names):] + names[: i % len(names)]:
                with overrides(solver, early_stop=rules[name]):
                    seconds, record = timed(lambda: solve_problem(solver, problem, samples=K, grader=grader))
                per_rule[name].append({
                    "id": problem.id, "s": seconds, "answer": record["answer"], "correct": record.get("correct"),
                    "tokens": _sample_tokens(record), "early_stop": record["vote"]["early_stop"],
                    "cancelled": sum(s["status"] == "cancelled" for s in record["samples"]),
                })
            log(f"voting (c) {i + 1}/{len(problems)}: " + ", ".join(
                f"{n} {per_rule[n][-1]['tokens']} tokens {per_rule[n][-1]['answer']!r}" for n in names))
    finally:
        solver.close()
    full = per_rule["off"]
    summary = {}
    for name, rows_ in per_rule.items():
        tokens = sum(r["tokens"] for r in rows_)
        summary[name] = {
            "tokens": tokens, "tokens_saved": 1 - tokens / max(1, sum(r["tokens"] for r in full)),
            "s": sum(r["s"] for r in rows_), "correct": sum(bool(r["correct"]) for r in rows_),
            "stopped_early": sum(r["early_stop"] is not None for r in rows_),
            "cancelled_samples": sum(r["cancelled"] for r in rows_),
            "winner_differs_from_off": sum(r["answer"] != f["answer"] for r, f in zip(rows_, full)),
        }
    return {"problems": len(problems), "summary": summary, "per_problem": per_rule}


# -- (d) memory ----------------------------------------------------------------------------------


def child(model: str, k: int, max_tokens: int | None) -> None:
    from bench.memory import _status_kib, kv_cache_bytes
    from mathsolve.core.batch import solve_problem
    from mathsolve.scoring.grader import Grader

    problem = gsm8k(1)[0]
    with _solver(model, max_tokens=max_tokens, early_stop="off", sessions=k) as solver:
        after_load = _status_kib("VmRSS")
        if k == 1:
            record = solver.solve(problem.question)
        else:
            with Grader(percent=True) as grader:
                record = solve_problem(solver, problem, samples=k, grader=grader)
        details = solver.engine.info.details
        n_ctx = details.get("n_ctx_per_sequence") or details["n_ctx"]
        metadata = getattr(getattr(solver.engine, "base", solver.engine), "llm").metadata
        report = {
            "sequences": solver.parallel, "engine": solver.engine.info.name, "n_ctx_per_sequence": n_ctx,
            "rss_after_load_kib": after_load, "vmhwm_kib": _status_kib("VmHWM"),
            "kv_bytes": kv_cache_bytes(metadata, n_ctx)["bytes"] * solver.parallel,
            "generated": _sample_tokens(record),
        }
    print(json.dumps(report))


def memory(ctx) -> dict[str, Any]:
    out = {}
    for k in (1, K):
        command = [sys.executable, "-m", "bench.voting", str(ctx.model_path), str(k), str(ctx.max_tokens or 0)]
        proc = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        report["model_bytes"] = os.path.getsize(ctx.model_path)
        report["peak_bytes"] = report["vmhwm_kib"] * 1024
        out[str(k)] = report
    return out


# -- the section ---------------------------------------------------------------------------------


RULES = {"off": "off", "auto": "auto", f"agree {AGREE}": str(AGREE)}


def run(ctx, reps: int, n_problems: int, n_early: int | None = None, parts: str = "abcd",
        rules: tuple[str, ...] = tuple(RULES), pairs: int = 2) -> dict[str, Any]:
    """`n_early`: problems of part (c), the first of the same list (default: all of them);
    part (c) solves each once per early-stop rule with -n 8, the longest part by far on a
    CPU. `parts`: which of (a)-(d) to run; `rules`: part (c)'s rules ("off" always runs:
    the others are measured against it); `pairs`: part (b)'s side-by-side pairs."""
    from mathsolve.scoring.grader import Grader

    problems = gsm8k(n_problems)
    result: dict[str, Any] = {}
    with Grader(percent=True) as grader:  # eval's grader, outside the timed parts that do not vote
        if "a" in parts:
            result["one_question"] = one_question(ctx, grader, reps)
            log("voting (a) done")
        if "b" in parts:
            result["in_flight"] = in_flight(ctx, grader, problems, pairs)
            log("voting (b) done")
        if "c" in parts:
            chosen = {name: RULES[name] for name in RULES if name == "off" or name in rules}
            result["early_stop"] = early_stop(ctx, grader, problems[: n_early or len(problems)], chosen)
    if "d" in parts:
        result["memory"] = memory(ctx)
    return result


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    if "one_question" in result:
        out += _rows_a(result["one_question"])
    if "in_flight" in result:
        out += _rows_b(result["in_flight"])
    if "early_stop" in result:
        out += _rows_c(result["early_stop"])
    if "memory" in result:
        out += _rows_d(result["memory"])
    return out


def _rows_a(a: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    s = a["median_s"]
    return [
        (f"9a. one question: greedy / -n {K} one at a time / -n {K} together (s, median of {a['reps']})",
         f"{s['greedy']:.1f} / {s[f'-n {K} one at a time']:.1f} / {s[f'-n {K} together']:.1f}; together is "
         f"x{a['together_vs_one_at_a_time']:.2f} faster than one at a time, "
         f"x{a['together_vs_greedy']:.2f} a greedy solve",
         "info", ""),
        (f"9a. -n {K} as run by default (together, early stop auto; s, median of {a['reps']})",
         f"{s[f'-n {K} together, early stop auto']:.1f}: x{a['auto_vs_greedy']:.2f} a greedy solve", "info", ""),
        (f"9a. -n {K} together = one at a time (same seeds)",
         f"same vote in {a['same_vote']}/{a['reps']} runs; same sample texts {a['same_sample_texts']} of {K}",
         "info", ""),
    ]


def _rows_b(b: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    one, many = b["runs"]["1 at a time"], b["runs"][f"{K} in flight"]
    return [
        (f"9b. eval {b['problems']} problems, 1 at a time / {K} in flight ({b['reps']} pairs)",
         f"{b['per_run']['1 at a time']} / {b['per_run'][f'{K} in flight']} problems/min "
         f"(x{b['speedup']:.2f}, median of the pairs {b['speedups']}); "
         f"accuracy {one['correct']}/{one['graded']} / {many['correct']}/{many['graded']}; "
         f"answers differ on {len(b['answers_differ'])}", "info", ""),
    ]


def _rows_c(c: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    full = c["summary"]["off"]
    return [(f"9c. early stop {name} vs off, {c['problems']} problems x -n {K}",
             f"{100 * r['tokens_saved']:.0f}% of sample tokens saved ({r['tokens']} / {full['tokens']}), "
             f"{r['s']:.0f} / {full['s']:.0f} s; accuracy {r['correct']} / {full['correct']}; winner differs "
             f"on {r['winner_differs_from_off']}; stopped early on {r['stopped_early']}", "info", "")
            for name, r in c["summary"].items() if name != "off"]


def _rows_d(d: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    mib = 2**20
    return [(f"9d. peak RSS, {r['sequences']} sequence(s) ({r['engine']})",
             f"{r['peak_bytes'] / mib:.0f} MiB (model {r['model_bytes'] / mib:.0f} MiB + KV "
             f"{r['kv_bytes'] / mib:.0f} MiB)", "info", "") for r in d.values()]


if __name__ == "__main__":
    try:  # llama.cpp's libraries load before numpy (bench/__main__.py says why)
        import llama_cpp  # noqa: F401
    except ImportError:
        pass
    child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) or None)
