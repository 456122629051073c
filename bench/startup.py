"""4. Start-up: `mathsolve --help`, `mathsolve models`, and time to first token.

Each command runs as a fresh process (`python -m mathsolve ...`), the variants
interleaved. Time to first token is measured twice for a model already on disk (and
in the page cache after the first run): from the outside, process start to the
first byte of streamed text (`--plain`), and from the record (`--json`):
timings.load_s (llama.cpp load) and timings.first_token_s (prompt to first token).
`-X importtime` shows which heavy modules each light command imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import MODEL_PROTOCOL, interleaved, median

# pydantic: typer 0.29+ validates option values with it (~50 ms to import); mathsolve's CLI
# coerces lazily so that light commands never load it (mathsolve.cli.program).
HEAVY = ("llama_cpp", "sympy", "numpy", "huggingface_hub", "pydantic")
# The yardstick: a minimal two-command Typer app, started the same way.
MINIMAL_APP = """import typer
app = typer.Typer()
@app.command()
def hello(name: str) -> None:
    print(name)
@app.command()
def bye() -> None:
    print("bye")
app()
"""
QUESTION = "What is 2 + 3?"


def mathsolve_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "mathsolve", *args]


def imported_modules(*args: str, timeout: float = 120) -> set[str]:
    """Every module `python -X importtime -m mathsolve ARGS` imports (top-level names
    and dotted ones), from its import-time report on stderr."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mathsolve", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mathsolve {' '.join(args)} exited {proc.returncode}: {proc.stderr[-500:]}")
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name)
    return names


def heavy_imports(*args: str) -> list[str]:
    """The HEAVY modules a command imports (top-level packages)."""
    names = imported_modules(*args)
    return [heavy for heavy in HEAVY if heavy in names]


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def first_byte(cmd: list[str]) -> dict[str, float]:
    """Seconds from process start to the first byte on stdout, and to its exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - started
    proc.stdout.read()
    proc.wait()
    return {"first_byte_s": first, "exit_s": time.perf_counter() - started}


def record_timings(cmd: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True)
    exit_s = time.perf_counter() - started
    timings = json.loads(proc.stdout)["timings"]
    return {"load_s": timings["load_s"], "first_token_s": timings["first_token_s"], "exit_s": exit_s}


def typer_ratios(reps: int, directory: Path) -> dict[str, float]:
    """`mathsolve --help` and `mathsolve models` against a minimal Typer app's `--help`, run
    in turns (app, --help, models) so the machine's drift touches all three alike: the
    median of each run's ratio, and the medians of the times."""
    app = directory / "minimal_typer_app.py"
    app.write_text(MINIMAL_APP)
    base, help_ratio, models_ratio = [], [], []
    for _ in range(reps):
        minimal = wall([sys.executable, str(app), "--help"])
        base.append(minimal)
        help_ratio.append(wall(mathsolve_cmd("--help")) / minimal)
        models_ratio.append(wall(mathsolve_cmd("models")) / minimal)
    return {"minimal_help_s": median(base), "help_ratio": median(help_ratio), "models_ratio": median(models_ratio)}


def run(ctx, reps: int) -> dict[str, Any]:
    model = str(ctx.model_path)
    solve = ["--model", model, "--protocol", MODEL_PROTOCOL, "--max-tokens", "16"]
    record_timings(mathsolve_cmd(*solve, "--json", QUESTION))  # warm-up: page cache, repack verdict
    runs = interleaved({
        "help": lambda: wall(mathsolve_cmd("--help")),
        "models": lambda: wall(mathsolve_cmd("models")),
        "plain": lambda: first_byte(mathsolve_cmd(*solve, "--plain", QUESTION)),
        "json": lambda: record_timings(mathsolve_cmd(*solve, "--json", QUESTION)),
    }, reps, "start-up")
    heavy = {"--help": heavy_imports("--help"), "models": heavy_imports("models")}
    ratios = typer_ratios(max(reps, 10), Path(model).parent)
    return {
        **ratios,
        "help_s": median(runs["help"]),
        "models_s": median(runs["models"]),
        "first_byte_s": median([r["first_byte_s"] for r in runs["plain"]]),
        "load_s": median([r["load_s"] for r in runs["json"]]),
        "first_token_s": median([r["first_token_s"] for r in runs["json"]]),
        "solve_exit_s": median([r["exit_s"] for r in runs["json"]]),
        "heavy_imports": heavy,
        "model": Path(model).name,
        "met": not any(heavy.values()) and ratios["help_ratio"] <= 1.2 and ratios["models_ratio"] <= 1.4,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    heavy = result["heavy_imports"]
    return [
        ("4. `mathsolve --help` wall time", f"{result['help_s']:.2f} s; heavy imports: "
         f"{', '.join(heavy['--help']) or 'none'}", "no heavy imports", "met" if not heavy["--help"] else "NOT met"),
        ("4. `mathsolve models` wall time", f"{result['models_s']:.2f} s; heavy imports: "
         f"{', '.join(heavy['models']) or 'none'}", "no heavy imports", "met" if not heavy["models"] else "NOT met"),
        ("4. start-up against a minimal two-command Typer app's `--help` "
         f"({result['minimal_help_s']:.2f} s), medians of paired runs",
         f"`--help` x{result['help_ratio']:.2f}, `models` x{result['models_ratio']:.2f}", "<= 1.2 / <= 1.4",
         "met" if result["help_ratio"] <= 1.2 and result["models_ratio"] <= 1.4 else "NOT met"),
        ("4. time to first token, cached model (process start to first streamed byte)",
         f"{result['first_byte_s']:.2f} s (record: load {result['load_s']:.2f} s + first token "
         f"{result['first_token_s']:.2f} s)", "info", ""),
    ]
