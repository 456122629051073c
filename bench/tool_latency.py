"""Per-block latency of the tool backends on released ToRA code blocks.

What it measures: the wall time of one ``Tool.run(code, limits=...)`` call, as the
solve loop makes it, for a new confined interpreter per block (``cold``: what
``run_python`` gives, the baseline) and the backends ``python``, ``sympy`` and
``numeric``, which fork each block from a warm zygote (that imported nothing, sympy,
or numpy and mpmath, once). The blocks are the programs of
the released ToRA outputs in the shared replay data (``mathsolve replay`` runs the
same ones): every block that imports sympy, and an evenly spaced sample of the
plain ones. Each warm backend runs one block first, so its zygote's start-up (paid
once per process) is reported apart and not in the per-block figures.

How: for every repetition and every block, the backends run it one after the
other, their order rotating from block to block, so that load changes on the
machine hit all of them alike. A block's latency is the median of its
repetitions; a category's, the median over its blocks. Outputs are compared
across backends (status, stdout, error) as a sanity check.

    .venv/bin/python -m bench.tool_latency [--reps 5] [--plain 30] [--json-out FILE]

Prints a table and the machine it ran on; ``--json-out`` writes everything,
per-block figures included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

from mathsolve import registry
from mathsolve.replay.core import read_blocks
from mathsolve.sandbox import Limits

from bench.common import ColdPython

REPLAY_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "replay"
BACKENDS = ("cold", "python", "sympy", "numeric")  # the first is the reference
IMPORTS_SYMPY = re.compile(r"^\s*(?:from|import)\s+sympy\b", re.MULTILINE)
LIMITS = Limits(timeout_s=5.0)  # the ToRA protocol's


def load_blocks(replay_dir: Path, plain: int) -> list[dict]:
    """Every sympy-importing block of the replay files, plus ``plain`` others spread evenly."""
    with_sympy, without = [], []
    for path in sorted(replay_dir.glob("*.jsonl")):
        _, blocks = read_blocks(path, protocol="tora")
        for block in blocks:
            entry = {"file": path.name, "record": block.record, "block": block.number, "code": block.code}
            (with_sympy if IMPORTS_SYMPY.search(block.code) else without).append(entry)
    step = max(1, len(without) // plain) if plain else 0
    sample = without[::step][:plain] if plain else []
    for entry in with_sympy:
        entry["category"] = "imports sympy"
    for entry in sample:
        entry["category"] = "plain"
    return with_sympy + sample


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sympy": version("sympy"),
        "numpy": version("numpy"),
        "mpmath": version("mpmath"),
        "load_avg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def same_output(a, b) -> bool:
    return (a.status, a.stdout, a.error) == (b.status, b.stdout, b.error)


def run(blocks: list[dict], backends: tuple[str, ...], reps: int) -> dict:
    tools = registry.tools() | {"cold": ColdPython()}
    missing = [name for name in backends if name not in tools]
    if missing:
        sys.exit(f"tool backend(s) not installed: {', '.join(missing)} (pip install -e . in the checkout)")
    startup = {}
    for name in backends:  # the warm zygotes start here, once; cold has nothing to start
        started = time.perf_counter()
        tools[name].run("pass", limits=LIMITS)
        startup[name] = time.perf_counter() - started
    times = {name: [[] for _ in blocks] for name in backends}
    disagreements = set()
    for rep in range(reps):
        for i, block in enumerate(blocks):
            order = backends[(i + rep) % len(backends):] + backends[:(i + rep) % len(backends)]
            results = {}
            for name in order:
                started = time.perf_counter()
                results[name] = tools[name].run(block["code"], limits=LIMITS)
                times[name][i].append(time.perf_counter() - started)
            if not all(same_output(results[backends[0]], results[name]) for name in backends[1:]):
                disagreements.add(i)
        print(f"  repetition {rep + 1}/{reps} done", file=sys.stderr)
    return {"startup_s": startup, "times": times, "disagreements": sorted(disagreements)}


def summarize(blocks: list[dict], measured: dict, backends: tuple[str, ...]) -> dict:
    rows = {}
    for category in ("imports sympy", "plain"):
        index = [i for i, block in enumerate(blocks) if block["category"] == category]
        if not index:
            continue
        medians = {name: statistics.median(statistics.median(measured["times"][name][i]) for i in index)
                   for name in backends}
        rows[category] = {"blocks": len(index), "median_s": medians,
                          "speedup_vs_cold": {name: medians[backends[0]] / medians[name] for name in backends}}
    return rows


def print_table(info: dict, rows: dict, measured: dict, backends: tuple[str, ...], reps: int) -> None:
    print(f"Per-block latency of Tool.run(), median over {reps} interleaved repetitions per block, "
          "then over the blocks")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['platform']}")
    print(f"Python {info['python']}, sympy {info['sympy']}, numpy {info['numpy']}, mpmath {info['mpmath']}; "
          f"load average at start {info['load_avg_start']}")
    print()
    header = f"{'blocks':<16}{'n':>4}" + "".join(f"{name:>12}" for name in backends) + \
        "".join(f"{backends[0] + '/' + name:>16}" for name in backends[1:])
    print(header)
    print("-" * len(header))
    for category, row in rows.items():
        line = f"{category:<16}{row['blocks']:>4}" + \
            "".join(f"{row['median_s'][name] * 1000:>10.1f}ms" for name in backends) + \
            "".join(f"{row['speedup_vs_cold'][name]:>15.1f}x" for name in backends[1:])
        print(line)
    print()
    print("first call (zygote start, once per process): " +
          ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in measured["startup_s"].items()))
    print(f"blocks whose status/stdout/error differ between backends: {len(measured['disagreements'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of every block (default 5)")
    parser.add_argument("--plain", type=int, default=30, help="plain blocks sampled (default 30)")
    parser.add_argument("--replay-dir", type=Path, default=REPLAY_DIR, help="folder of replay JSONL files")
    parser.add_argument("--tools", default=",".join(BACKENDS), help="backends, first is the reference")
    parser.add_argument("--json-out", type=Path, help="write all figures here as JSON")
    args = parser.parse_args()
    if not args.replay_dir.is_dir():
        sys.exit(f"replay data not found at {args.replay_dir} (--replay-dir)")
    backends = tuple(name.strip() for name in args.tools.split(",") if name.strip())
    blocks = load_blocks(args.replay_dir, args.plain)
    info = machine()
    print(f"{len(blocks)} blocks x {len(backends)} backends x {args.reps} repetitions ...", file=sys.stderr)
    measured = run(blocks, backends, args.reps)
    info["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = summarize(blocks, measured, backends)
    print_table(info, rows, measured, backends, args.reps)
    if args.json_out:
        report = {
            "what": "wall time of one Tool.run() per block; median of repetitions per block, then over blocks",
            "limits": {"timeout_s": LIMITS.timeout_s},
            "machine": info,
            "reps": args.reps,
            "summary": rows,
            "startup_s": measured["startup_s"],
            "disagreements": [blocks[i] | {"index": i} for i in measured["disagreements"]],
            "blocks": [{key: block[key] for key in ("file", "record", "block", "category")}
                       | {"median_s": {name: statistics.median(measured["times"][name][i]) for name in backends}}
                       for i, block in enumerate(blocks)],
        }
        args.json_out.write_text(json.dumps(report, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
