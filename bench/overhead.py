"""1. Orchestration overhead: a mathsolve solve against raw llama-cpp-python.

The same loaded settings on both sides (greedy, n_ctx, threads, n_batch, weight
repacking, GPU layers). Both start with an empty KV cache. mathsolve solves the
question (one round, so that everything llama.cpp evaluates is the prompt and the
model's own tokens); raw llama-cpp-python, on its own `Llama` with the same settings,
runs `Llama.generate` over the same prompt tokens and decodes exactly as many tokens
as mathsolve had llama.cpp evaluate. The ratio is raw time / mathsolve time, i.e.
mathsolve's throughput over raw throughput; the time of a code block run by the
tool is left out (it is measured in sections 3 and 7), everything else counts:
tokenizing, the loop, stop-string search, streaming, answer extraction, the record.

mathsolve runs three ways: the Python API with no output, the plain renderer (pipes)
and the rich renderer on a terminal (live code panels), the last two writing into
memory. A second, tiny random-weight model whose decode costs almost nothing makes
the per-token cost of each side visible in microseconds (what would matter on a
fast GPU).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from bench import render_cost
from bench.common import GREEDY, cold_kv, engine_settings, interleaved, log, median, raw_llama, timed

# Makes the model write a long (~35-line) code block: the rich renderer's live panel at work.
CODE_QUESTION = (
    "Write a Python program that simulates a bank account for 12 months: start with $1000, add 2% "
    "interest each month, deposit $150 every month and withdraw $80 every third month. Print the "
    "balance after each month and the final balance."
)
TARGET = 0.95


def consume(generator, n: int) -> int:
    count = 0
    try:
        for _ in generator:
            count += 1
            if count >= n:
                break
    finally:
        generator.close()
    return count


@contextlib.contextmanager
def overrides(solver, **values: Any):
    """Solve with some settings changed, then put them back."""
    saved = solver.settings
    solver.settings = saved.with_overrides(**values)
    try:
        yield solver
    finally:
        solver.settings = saved


def _renderers():
    return {"api": lambda: None} | render_cost.renderers()


def compare(solver, raw, question: str, reps: int, label: str) -> dict[str, Any]:
    """Interleaved runs of raw generation and of mathsolve with each renderer."""
    engine, protocol = solver.engine, solver.protocol
    cold_kv(engine.llm)
    first = solver.solve(question)
    tokens = first["tokens"]
    prompt_ids = engine.session(
        protocol.prompt(question), special=protocol.special_prompt, render_special=protocol.render_special,
        literal=question, markers=protocol.markers,
    ).tokens
    decode = tokens["evaluated"] - len(prompt_ids) + 1  # tokens raw samples: the same evaluations

    def run_raw():
        cold_kv(raw)
        seconds, n = timed(lambda: consume(raw.generate(prompt_ids, **GREEDY), decode))
        return {"s": seconds, "sampled": n}

    def run_solve(make_events):
        def run():
            cold_kv(engine.llm)
            seconds, record = timed(lambda: solver.solve(question, events=make_events()))
            return {"s": seconds, "tool_s": record["timings"]["tool_s"] or 0.0,
                    "evaluated": record["tokens"]["evaluated"], "answer": record["answer"]}
        return run

    variants = {"raw": run_raw} | {name: run_solve(make) for name, make in _renderers().items()}
    runs = interleaved(variants, reps, label, warmup=True)
    raw_s = [r["s"] for r in runs["raw"]]
    out: dict[str, Any] = {
        "question": question,
        "prompt_tokens": len(prompt_ids),
        "generated": tokens["generated"],
        "evaluated": tokens["evaluated"],
        "tool_calls": len(first["tool_calls"]),
        "raw_s": median(raw_s),
        "raw_tokens_per_s": tokens["generated"] / median(raw_s),
        "deterministic": all(r["evaluated"] == tokens["evaluated"] for name in _renderers() for r in runs[name]),
    }
    for name in _renderers():
        work = [r["s"] - r["tool_s"] for r in runs[name]]
        out[name] = {
            "s": median([r["s"] for r in runs[name]]),
            "tool_s": median([r["tool_s"] for r in runs[name]]),
            "ratio": median([raw / own for raw, own in zip(raw_s, work)]),  # pairwise, same repetition
        }
    return out


def tiny_model(directory: Path) -> Path | None:
    """A tiny random-weight Qwen-like GGUF (the tests' generator; needs the `gguf` package)."""
    try:
        from mathsolve.testkit import write_tiny_gguf
    except ImportError:
        return None
    return write_tiny_gguf(directory / "tiny-bpe.gguf", tokenizer="bpe",
                           special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"))


def per_token(reps: int, question: str, threads: int) -> dict[str, Any] | None:
    """Per-token cost in microseconds on a model whose decode is nearly free."""
    from mathsolve.api import Solver

    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_model(Path(tmp))
        if path is None:
            log("per-token overhead skipped: the `gguf` package is not installed")
            return None
        with Solver(model=str(path), protocol="qwen-tir", max_rounds=1, max_tokens=400, threads=threads,
                    n_ctx=2048) as solver:  # the tiny model's training context
            raw = raw_llama(path, engine_settings(solver.engine))
            try:
                result = compare(solver, raw, question, reps, "tiny model")
            finally:
                raw.close()
    n = result["evaluated"] - result["prompt_tokens"] + 1
    result["raw_us_per_token"] = 1e6 * result["raw_s"] / n
    for name in _renderers():
        result[name]["us_per_token"] = 1e6 * (result[name]["s"] - result[name]["tool_s"]) / n
        result[name]["overhead_us_per_token"] = result[name]["us_per_token"] - result["raw_us_per_token"]
    return result


def run(ctx, reps: int) -> dict[str, Any]:
    from bench.common import gsm8k

    questions = {"gsm8k-0 (prose)": gsm8k(1)[0].question, "code block": CODE_QUESTION}
    results = {}
    with overrides(ctx.solver, max_rounds=1):
        for label, question in questions.items():
            results[label] = compare(ctx.solver, ctx.raw, question, reps, f"overhead {label}")
    tiny = per_token(max(reps, 5), CODE_QUESTION, engine_settings(ctx.solver.engine)["threads"])
    renderers = render_cost.run(max(reps, 3))
    worst = min(r[name]["ratio"] for r in results.values() for name in _renderers())
    return {"questions": results, "tiny_model": tiny, "renderers_at_gpu_pace": renderers,
            "worst_ratio": worst, "target": TARGET, "met": worst >= TARGET}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for label, r in result["questions"].items():
        ratios = ", ".join(f"{name} {r[name]['ratio']:.3f}" for name in _renderers())
        out.append((f"1. throughput vs raw llama-cpp-python, {label} ({r['generated']} tok, "
                    f"raw {r['raw_tokens_per_s']:.1f} tok/s)", ratios, f">= {TARGET}",
                    "met" if min(r[n]["ratio"] for n in _renderers()) >= TARGET else "NOT met"))
    tiny = result.get("tiny_model")
    if tiny:
        costs = ", ".join(f"{name} +{tiny[name]['overhead_us_per_token']:.0f}" for name in _renderers())
        out.append((f"1. per-token cost, tiny model (raw {tiny['raw_us_per_token']:.0f} us/token)",
                    f"{costs} us/token", "info", ""))
    return out + render_cost.rows(result.get("renderers_at_gpu_pace"))
