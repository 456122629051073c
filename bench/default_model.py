"""Which default model for a CPU: the candidates' decode and prompt speed, side by side,
and what a typical solution costs in seconds.

    .venv/bin/python -m bench.default_model [--shapes qwen2.5-1.5b,qwen3-1.7b,qwen3-0.6b]
                     [--reps 5] [--depth 1024] [--threads N] [--json-out FILE]
    .venv/bin/python -m bench.default_model --load gpt-oss-20b:mxfp4
    .venv/bin/python -m bench --only default-model

The candidates are random-weight models of the real checkpoints' shapes, Q4_0 (a mixture
of experts may be given as shipped, `gpt-oss-20b:mxfp4`; bench/synthetic.py; written once
into the bench cache): speed depends on shapes and
weight type, not on the weights' values. All are loaded through mathsolve's engine (its
settings: weight repacking as the engine decides, threads as given) and measured
interleaved, each repetition in the same order of steps:

1. after an empty cache, a 64-token prompt, then 32 tokens decoded one llama.cpp call
   each ("decode");
2. `depth` more prompt tokens in one call ("prompt", tokens per second of prefill);
3. 32 more tokens decoded, attention now reading ~`depth` cached positions ("decode deep").

Token ids are drawn at random from the plain-word part of the vocabulary (fixed seed),
not sampled: a random model's greedy choice repeats one token, which would route a
mixture of experts to the same experts every step. Greedy sampling itself cost 0.25 ms a
token with gpt-oss's 201,088-token vocabulary (measured on a reduced model), next to tens
of milliseconds of decoding.

Per-token decode time grows with the number of cached positions d, about linearly:
t(d) = a + b d, fitted through the two decode figures. A solution of G generated tokens
after a P-token prompt then costs P / prompt rate + sum over its tokens of t(d), the
figure `estimates` gives for typical solution lengths (TRACES, with their sources); past
the measured depth it is an extrapolation.

`--load SHAPE[:mxfp4]` measures one model alone in a fresh process instead: the file evicted
from the page cache (posix_fadvise), then load time, resident memory after the load and
after decoding, prompt and decode rates, and a second (warm) load.
"""

from __future__ import annotations

try:  # llama.cpp's libraries load before numpy (bench/__main__.py says why)
    import llama_cpp  # noqa: F401
except ImportError:  # the measurement says what is missing where it needs it
    pass

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, exclusive_machine, interleaved, log, machine_info, machine_line, median, user_cache_dir
from bench.synthetic import SHAPES, WEIGHTS, synthetic_model

CANDIDATES = ("qwen2.5-1.5b", "qwen3-1.7b", "qwen3-0.6b")
SHORT = 64  # prompt tokens before the first decode
DEPTH = 1024  # prompt tokens before the deep decode (default)
DECODED = 32  # tokens per decode measurement
SEED = 0

# Typical solutions: (what, shape, prompt tokens, generated tokens, source). Prompts are
# the protocol's instructions plus a GSM8K-sized question (~60 tokens).
TRACES: tuple[tuple[str, str, int, int, str], ...] = (
    ("Qwen2.5-Math-1.5B TIR, GSM8K", "qwen2.5-1.5b", 110, 190,
     "measured here: the released ToRA-Code-34B GSM8K solutions (shared/data/replay), 1,319 of them, "
     "tokenized with Qwen2.5's tokenizer: median 186 tokens (177 written by the model, the rest tool "
     "output), 90th percentile 258"),
    ("Qwen3-1.7B thinking, GSM8K", "qwen3-1.7b", 110, 1400,
     "third-party measurement: mean 1,399 tokens (thinking + answer), model card of "
     "LakshyAAAgrawal/QThink-Qwen3-1.7B-GSM8k; no first-party figure found"),
    ("Qwen3-0.6B thinking, GSM8K", "qwen3-0.6b", 110, 1400,
     "assumed as long as Qwen3-1.7B's (no published figure found; smaller reasoning models tend "
     "to write longer, not shorter)"),
    ("OpenMath-Nemotron-1.5B, competition problems", "qwen2.5-1.5b", 150, 6000,
     "derived: OpenMathReasoning's released solutions (which the model is trained to imitate) average "
     "~22 KB per CoT row (71.6 GB / 3.2M rows) and ~21 KB per TIR row (35.7 GB / 1.72M), about 6,000 "
     "tokens at 3.7 characters per token (dataset card nvidia/OpenMathReasoning); evaluated with up "
     "to 32,768 tokens"),
    ("gpt-oss high + python, AIME", "gpt-oss-20b", 250, 13300,
     "gpt-oss-120b, high effort with the python tool: 13,306 tokens on average on AIME24, 14,463 on "
     "AIME25 (NeMo-Skills tutorial 'Inference with gpt-oss-120b using stateful Python code "
     "execution', 2025-08-29); the 20b is not published, nor any effort on GSM8K-sized problems"),
)


# -- measuring one loaded model ----------------------------------------------------------


def token_ids(n_vocab: int, count: int) -> list[int]:
    """Random plain-word ids: past the byte-level base vocabulary, before any specials."""
    import numpy as np

    high = min(100_000, n_vocab - 2_000)
    return np.random.default_rng(SEED).integers(1_000, high, size=count).tolist()


def _decode(llm, ids: list[int]) -> float:
    started = time.perf_counter()
    for token in ids:
        llm.eval([token])
    return len(ids) / (time.perf_counter() - started)


def one_repetition(llm, ids: list[int], depth: int) -> dict[str, float]:
    """Steps 1-3 of the module docstring on a raw llama-cpp-python Llama: positions
    only grow, so no cache removal is needed (a sliding-window cache may refuse it)."""
    llm.reset()
    llm.eval(ids[:SHORT])
    decode = _decode(llm, ids[SHORT:SHORT + DECODED])
    start = SHORT + DECODED
    started = time.perf_counter()
    llm.eval(ids[start:start + depth])
    prompt = depth / (time.perf_counter() - started)
    deep = _decode(llm, ids[start + depth:start + depth + DECODED])
    return {"decode_tok_s": decode, "prompt_tok_s": prompt, "decode_deep_tok_s": deep}


def positions(depth: int) -> tuple[float, float]:
    """The mean number of cached positions during each decode measurement."""
    return SHORT + DECODED / 2, SHORT + DECODED + depth + DECODED / 2


def n_ctx_for(depth: int) -> int:
    return SHORT + 2 * DECODED + depth + 64


def _rss_kib(field: str = "VmRSS") -> int | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return None


# -- the side-by-side comparison -----------------------------------------------------------


def parse_spec(spec: str) -> tuple[str, str]:
    """"qwen3-1.7b" or "gpt-oss-20b:mxfp4": a shape and its weight types (q4_0 by default)."""
    shape, _, weights = spec.partition(":")
    return shape, weights or "q4_0"


def spec_problem(spec: str) -> str | None:
    shape, weights = parse_spec(spec)
    if shape not in SHAPES:
        return f"unknown shape {shape!r} (known: {', '.join(SHAPES)})"
    if weights not in WEIGHTS:
        return f"unknown weights {weights!r} (known: {', '.join(WEIGHTS)})"
    if weights == "mxfp4" and not SHAPES[shape].n_expert:
        return f"{spec}: mxfp4 is the experts' type, for mixture-of-experts shapes only"
    return None


def compare(specs: list[str], reps: int, depth: int, threads: int | None) -> dict[str, Any]:
    from mathsolve.engines.llama import LlamaEngine

    engines: dict[str, Any] = {}
    loaded: dict[str, dict[str, Any]] = {}
    try:
        for spec in specs:
            shape, weights = parse_spec(spec)
            path = synthetic_model(shape, user_cache_dir(), weights)
            before = _rss_kib()
            engine = LlamaEngine(str(path), n_ctx=n_ctx_for(depth), threads=threads, notify=log)
            engines[spec] = engine
            loaded[spec] = {"shape": shape, "weights": weights, "file": path.name, "bytes": path.stat().st_size,
                            "load_s": round(engine.load_s, 2), "rss_added_mib": _rss_delta_mib(before),
                            "extra_buffers": engine.info.details["extra_buffers"],
                            "threads": engine.info.details["threads"]}
            log(f"{spec}: loaded in {engine.load_s:.1f} s ({path.stat().st_size / 1e9:.2f} GB)")
        ids = {spec: token_ids(e.llm.n_vocab(), SHORT + 2 * DECODED + depth) for spec, e in engines.items()}
        variants = {spec: (lambda e=e, spec=spec: one_repetition(e.llm, ids[spec], depth))
                    for spec, e in engines.items()}
        runs = interleaved(variants, reps, "default model", warmup=True)
    finally:
        for engine in engines.values():
            engine.close()
    models = {}
    for spec, rs in runs.items():
        figures = {key: median([r[key] for r in rs]) for key in rs[0]}
        models[spec] = loaded[spec] | figures | {"runs": rs}
    return {"depth": depth, "decoded": DECODED, "positions": positions(depth), "reps": reps,
            "models": models, "estimates": estimates(models, positions(depth))}


def _rss_delta_mib(before_kib: int | None) -> float | None:
    after = _rss_kib()
    return None if before_kib is None or after is None else round((after - before_kib) / 1024)


# -- seconds per solution --------------------------------------------------------------------


def decode_fit(decode: float, deep: float, at: tuple[float, float]) -> tuple[float, float]:
    """(a, b) of t(d) = a + b d seconds per token, through the two measured points."""
    t0, t1 = 1 / decode, 1 / deep
    b = max(0.0, (t1 - t0) / (at[1] - at[0]))
    return t0 - b * at[0], b


def solve_seconds(fit: tuple[float, float], prompt_rate: float, prompt: int, generated: int) -> float:
    a, b = fit
    # sum of a + b d for d = prompt .. prompt + generated - 1
    return prompt / prompt_rate + generated * a + b * (generated * prompt + generated * (generated - 1) / 2)


def estimates(models: dict[str, dict[str, Any]], at: tuple[float, float]) -> list[dict[str, Any]]:
    out = []
    for what, shape, prompt, generated, source in TRACES:
        m = next((m for m in models.values() if m["shape"] == shape), None)
        if m is None:
            continue
        fit = decode_fit(m["decode_tok_s"], m["decode_deep_tok_s"], at)
        seconds = solve_seconds(fit, m["prompt_tok_s"], prompt, generated)
        out.append({"what": what, "shape": shape, "weights": m["weights"], "prompt_tokens": prompt,
                    "generated_tokens": generated, "seconds": round(seconds, 1),
                    "extrapolated": prompt + generated > at[1], "source": source})
    return out


# -- one large model alone ------------------------------------------------------------------


def load_child(model: str, threads: int | None, depth: int) -> dict[str, Any]:
    """In a fresh process: evict the file from the page cache, load it (cold), measure,
    close, load again (warm)."""
    from mathsolve.engines.llama import LlamaEngine
    from mathsolve.engines.llama.repack import decide
    from mathsolve.ggufinfo import read_gguf

    # The repacking verdict first: its probe (a child loading the model) would warm the
    # page cache before the timed load.
    verdict = decide(model, setting="auto", file_type=read_gguf(model).file_type, weights_on_gpu=False, notify=log)
    fd = os.open(model, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    report: dict[str, Any] = {"extra_buffers": verdict.extra_buffers, "rss_before_kib": _rss_kib()}
    engine = LlamaEngine(model, n_ctx=n_ctx_for(depth), threads=threads, notify=log)
    try:
        # Resident = anonymous (repacked weights, buffers) + file-backed (the mapped
        # model file: page cache the kernel can drop and read again).
        report |= {"cold_load_s": round(engine.load_s, 2), "rss_after_load_kib": _rss_kib(),
                   "anon_after_load_kib": _rss_kib("RssAnon"), "file_after_load_kib": _rss_kib("RssFile"),
                   "threads": engine.info.details["threads"]}
        ids = token_ids(engine.llm.n_vocab(), SHORT + 2 * DECODED + depth)
        report |= one_repetition(engine.llm, ids, depth)  # the first touches every weight it needs
        report["second"] = one_repetition(engine.llm, ids, depth)
        report |= {"rss_after_decode_kib": _rss_kib(), "vmhwm_kib": _rss_kib("VmHWM")}
    finally:
        engine.close()
    engine = LlamaEngine(model, n_ctx=n_ctx_for(depth), threads=threads, notify=log)
    report["warm_load_s"] = round(engine.load_s, 2)
    engine.close()
    return report


def measure_load(shape: str, weights: str, threads: int | None, depth: int) -> dict[str, Any]:
    import subprocess

    path = synthetic_model(shape, user_cache_dir(), weights)
    cmd = [sys.executable, "-m", "bench.default_model", "--child", str(path), "--depth", str(depth)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"the load measurement failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"shape": shape, "weights": weights, "file": path.name, "bytes": path.stat().st_size, "depth": depth,
            "positions": positions(depth)} | report


# -- the bench section and the command -------------------------------------------------------


def run(ctx, reps: int) -> dict[str, Any]:
    """`python -m bench --only default-model`: the candidates at the default depth."""
    return compare(list(CANDIDATES), reps, DEPTH, ctx.threads)


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for name, m in result["models"].items():
        out.append((f"default model: {m['shape']} ({m['weights'].upper()}, synthetic)",
                    f"decode {m['decode_tok_s']:.1f} tok/s, {m['decode_deep_tok_s']:.1f} after "
                    f"{result['depth']} tokens; prompt {m['prompt_tok_s']:.0f} tok/s", "info", ""))
    for e in result["estimates"]:
        out.append((f"default model: {e['what']}",
                    f"{e['seconds']:.0f} s ({e['prompt_tokens']} + {e['generated_tokens']} tokens"
                    + (", extrapolated)" if e["extrapolated"] else ")"), "info", ""))
    return out


def _print_load(r: dict[str, Any]) -> None:
    mib = 1024
    print(f"{r['shape']} ({r['weights']}, {r['bytes'] / 1e9:.2f} GB, repacking "
          f"{'on' if r['extra_buffers'] else 'off'}, {r['threads']} threads)")
    print(f"  load: {r['cold_load_s']} s cold (evicted from the page cache), {r['warm_load_s']} s warm")
    print(f"  resident: {r['rss_after_load_kib'] / mib:.0f} MiB after the load ({r['anon_after_load_kib'] / mib:.0f} "
          f"anonymous, {r['file_after_load_kib'] / mib:.0f} file-backed), "
          f"{r['rss_after_decode_kib'] / mib:.0f} MiB after decoding (peak {r['vmhwm_kib'] / mib:.0f} MiB)")
    for label, x in (("first", r), ("second", r["second"])):
        print(f"  {label} pass: decode {x['decode_tok_s']:.2f} tok/s, {x['decode_deep_tok_s']:.2f} after "
              f"{r['depth']} tokens; prompt {x['prompt_tok_s']:.1f} tok/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.default_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=",".join(CANDIDATES),
                        help=f"comma-separated shapes to compare, each optionally :mxfp4 for a mixture of "
                        f"experts as shipped (default {','.join(CANDIDATES)}; known: {', '.join(SHAPES)})")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (5)")
    parser.add_argument("--depth", type=int, default=DEPTH, help=f"prompt tokens before the deep decode ({DEPTH})")
    parser.add_argument("--threads", type=int, help="engine threads (default: mathsolve's, all usable cores)")
    parser.add_argument("--load", metavar="SHAPE[:WEIGHTS]",
                        help="measure this one model alone instead (load time, memory, speed)")
    parser.add_argument("--json-out", type=Path, help="write every figure here as JSON")
    parser.add_argument("--no-lock", action="store_true", help="do not take the machine-wide benchmark lock")
    parser.add_argument("--max-load", type=float, default=1.5, help="start when the load average is below (1.5)")
    parser.add_argument("--load-wait", type=float, default=1800, help="wait at most this long for it (s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(load_child(args.child, args.threads, args.depth)))
        return
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    problems = [p for p in map(spec_problem, shapes + ([args.load] if args.load else [])) if p]
    if problems:
        parser.error("; ".join(problems))
    if args.reps < 1 or args.depth < 1:
        parser.error("--reps and --depth must be at least 1")

    report: dict[str, Any] = {"command": ["python", "-m", "bench.default_model", *(argv or sys.argv[1:])]}
    with exclusive_machine(lock=not args.no_lock, max_load=args.max_load, wait_s=args.load_wait) as lock_state:
        report |= {"lock": lock_state, "machine": machine_info()}
        started = time.perf_counter()
        if args.load:
            report["load"] = measure_load(*parse_spec(args.load), args.threads, args.depth)
        else:
            report["default_model"] = compare(shapes, args.reps, args.depth, args.threads)
        report["duration_s"] = round(time.perf_counter() - started, 1)
        report["machine"]["load_avg_end"] = os.getloadavg()
    print(f"machine: {machine_line(report['machine'])}; load average at start "
          f"{report['lock']['load_at_start'][0]:.2f}, at end {report['machine']['load_avg_end'][0]:.2f}")
    if args.load:
        _print_load(report["load"])
    else:
        for figure, value, _, _ in rows(report["default_model"]):
            print(f"{figure}: {value}")
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1, default=str) + "\n")
        log(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
