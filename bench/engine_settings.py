"""Engine settings from measurement: threads, n_batch, weight repacking.

Raw llama-cpp-python instances that differ from the engine's settings in one value
each, all loaded at once and measured interleaved: prompt evaluation (a ~1,000-token
prompt, where n_batch matters) and generation (64 greedy tokens after a short
prompt, timed from the first sampled token to the last).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import GREEDY, cold_kv, engine_settings, interleaved, log, median, raw_llama

GEN_TOKENS = 64


def candidates(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cores = base["threads"]
    threads = sorted({1, cores} if cores <= 2 else {cores // 2, cores})
    configs = {}
    for t in threads:
        for n_batch in (256, 512):
            configs[f"threads={t} n_batch={n_batch}"] = base | {"threads": t, "n_batch": n_batch}
    if base["extra_buffers"]:
        configs[f"threads={cores} n_batch=512 repack off"] = base | {"n_batch": 512, "extra_buffers": False}
    return configs


def long_prompt(llm, problems) -> list[int]:
    text = "\n\n".join(p.question for p in problems)
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:1000]


def measure_prompt(llm, tokens: list[int]) -> float:
    cold_kv(llm)
    started = time.perf_counter()
    llm.eval(tokens)
    return len(tokens) / (time.perf_counter() - started)


def measure_generation(llm, tokens: list[int]) -> float:
    cold_kv(llm)
    first = None
    count = 0
    generator = llm.generate(tokens, **GREEDY)
    try:
        for _ in generator:
            count += 1
            if count == 1:
                first = time.perf_counter()
            if count >= GEN_TOKENS:
                break
    finally:
        generator.close()
    return (count - 1) / (time.perf_counter() - first)


def run(ctx, reps: int) -> dict[str, Any]:
    from bench.common import gsm8k

    base = engine_settings(ctx.solver.engine)
    configs = candidates(base)
    llms = {name: raw_llama(ctx.model_path, settings) for name, settings in configs.items()}
    try:
        first = next(iter(llms.values()))
        long_ids = long_prompt(first, gsm8k(12))
        short_ids = first.tokenize(gsm8k(1)[0].question.encode("utf-8"), add_bos=True, special=False)
        variants = {name: (lambda llm=llm: {"prompt": measure_prompt(llm, long_ids),
                                            "generation": measure_generation(llm, short_ids)})
                    for name, llm in llms.items()}
        runs = interleaved(variants, reps, "engine settings")
    finally:
        for llm in llms.values():
            llm.close()
    results = {
        name: {"prompt_tok_s": median([r["prompt"] for r in rs]),
               "generation_tok_s": median([r["generation"] for r in rs]),
               "settings": configs[name]}
        for name, rs in runs.items()
    }
    best_gen = max(results, key=lambda n: results[n]["generation_tok_s"])
    best_prompt = max(results, key=lambda n: results[n]["prompt_tok_s"])
    log(f"engine settings: fastest generation {best_gen}, fastest prompt {best_prompt}")
    return {"engine": base, "prompt_tokens": len(long_ids), "configs": results,
            "fastest_generation": best_gen, "fastest_prompt": best_prompt}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for name, r in result["configs"].items():
        out.append((f"settings: {name}", f"prompt {r['prompt_tok_s']:.0f} tok/s ({result['prompt_tokens']} tok), "
                    f"generation {r['generation_tok_s']:.1f} tok/s", "info", ""))
    return out
