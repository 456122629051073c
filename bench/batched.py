"""8. Batched decoding: aggregate decode throughput of K sequences decoded together in one
llama.cpp context (mathsolve.engines.llama.batched) after one shared prompt, K = 1, 2, 4, 8,
beside one LlamaSession (today's engine, one sequence).

Each K has its own BatchedEngine over the section's loaded model (K slots of CONTEXT
tokens each). A repetition opens K sessions on the same prompt (qwen-tir, the first GSM8K
question) and has each generate one token: the prompt is evaluated once, by the first
sequence, and its cells shared with the others (llama_memory_seq_cp). Then the timed part:
one thread per session generates TOKENS greedy tokens again from the same context (each
re-evaluates only the prompt's last token, in the first decode call), all started at once
by a barrier; aggregate tokens/s = K x TOKENS / the time until the last one ends. The
LlamaSession side does the same with one session (llama.cpp reuses its cached prompt).
The engine's default KV layout is a stream per sequence; "K=8 unified" is K=8 with one
unified cache (each sequence's attention then reads every sequence's cells).
Greedy from one prompt, every sequence must write the LlamaSession's text: `same_text`
says whether batching changed any of them on this model (decoded in batches, a quantized
model's logits may differ in the last bits).
"""

from __future__ import annotations

import threading
from typing import Any

from bench.common import gsm8k, interleaved, log, median, timed

KS = (1, 2, 4, 8)
TOKENS = 64
CONTEXT = 1024  # per sequence: the prompt (~300 tokens) and TOKENS fit


def _batched_side(batched, prompt: str, k: int):
    from mathsolve.engines.base import Sampling

    def go() -> dict[str, Any]:
        sessions = [batched.session(prompt, special=True) for _ in range(k)]
        try:
            for session in sessions:  # untimed: the prompt, evaluated once and shared
                session.generate(stops=(), max_tokens=1, sampling=Sampling())
            barrier, texts = threading.Barrier(k + 1), [""] * k

            def work(i: int) -> None:
                barrier.wait()
                texts[i] = sessions[i].generate(stops=(), max_tokens=TOKENS, sampling=Sampling()).text

            threads = [threading.Thread(target=work, args=(i,)) for i in range(k)]
            for thread in threads:
                thread.start()

            def release_and_join() -> None:
                barrier.wait()
                for thread in threads:
                    thread.join()

            seconds, _ = timed(release_and_join)
            return {"s": seconds, "tokens_per_s": k * TOKENS / seconds, "texts": texts}
        finally:
            for session in sessions:
                session.close()

    return go


def _plain_side(engine, prompt: str):
    from mathsolve.engines.base import Sampling

    def go() -> dict[str, Any]:
        session = engine.session(prompt, special=True)
        session.generate(stops=(), max_tokens=1, sampling=Sampling())
        seconds, gen = timed(lambda: session.generate(stops=(), max_tokens=TOKENS, sampling=Sampling()))
        return {"s": seconds, "tokens_per_s": TOKENS / seconds, "texts": [gen.text]}

    return go


def run(ctx, reps: int) -> dict[str, Any]:
    from mathsolve.engines.llama.batched import BatchedEngine

    solver = ctx.solver
    engine = solver.engine
    prompt = solver.protocol.prompt(gsm8k(1)[0].question)
    engines = {f"K={k}": (BatchedEngine(engine, slots=k, n_ctx=CONTEXT), k) for k in KS}
    k = max(KS)
    engines[f"K={k} unified"] = (BatchedEngine(engine, slots=k, n_ctx=CONTEXT, unified=True), k)
    try:
        variants = {"LlamaSession": _plain_side(engine, prompt)}
        variants.update({name: _batched_side(batched, prompt, k) for name, (batched, k) in engines.items()})
        runs = interleaved(variants, reps, "batched decoding", warmup=True)
        counters = {name: dict(batched.counters) for name, (batched, _) in engines.items()}
    finally:
        for batched, _ in engines.values():
            batched.close()
    reference = runs["LlamaSession"][0]["texts"][0]
    results: dict[str, Any] = {}
    for name, records in runs.items():
        rate = median([r["tokens_per_s"] for r in records])
        results[name] = {
            "tokens_per_s": rate,
            "per_run_tokens_per_s": [r["tokens_per_s"] for r in records],
            "same_text": all(text == reference for r in records for text in r["texts"]),
        }
    base = results["K=1"]["tokens_per_s"]
    for name in results:
        results[name]["vs_one_sequence"] = results[name]["tokens_per_s"] / base
    log("batched decoding: " + ", ".join(f"{n} {r['tokens_per_s']:.1f} tok/s" for n, r in results.items()))
    return {"tokens": TOKENS, "context_per_sequence": CONTEXT, "variants": results, "counters": counters,
            "all_same_text": all(r["same_text"] for r in results.values())}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    v = result["variants"]
    rates = ", ".join(f"{name} {r['tokens_per_s']:.1f} (x{r['vs_one_sequence']:.2f})" for name, r in v.items())
    differ = [name for name, r in v.items() if not r["same_text"]]
    return [
        (f"8. batched decode, aggregate tok/s after one shared prompt ({result['tokens']} tokens each)",
         rates, "info", ""),
        ("8. batched greedy text = one LlamaSession's", "yes, every sequence" if not differ
         else f"differs: {', '.join(differ)}", "info", ""),
    ]
