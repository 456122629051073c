"""Engine settings from measurement: threads, n_batch, weight repacking, GPU layers,
flash attention, KV cache type.

Raw llama-cpp-python instances that differ from the engine's settings in one value
each, all loaded at once and measured interleaved: prompt evaluation (a ~1,000-token
prompt, where n_batch matters) and generation (64 greedy tokens, timed from the first
sampled token to the last) after a short prompt and after the long one.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import GREEDY, cold_kv, engine_settings, interleaved, log, median, raw_llama

GEN_TOKENS = 64


def candidates(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """On the CPU: the engine's own settings ("engine") and variants that change one
    thing each."""
    cores = base["threads"]
    threads = sorted({1, cores} if cores <= 2 else {cores // 2, cores})
    configs = {"engine": base}
    for t in threads:
        for n_batch in (256, 512):
            if (t, n_batch) != (cores, base["n_batch"]):
                configs[f"threads={t} n_batch={n_batch}"] = base | {"threads": t, "n_batch": n_batch}
    if base["extra_buffers"]:
        configs["repack off"] = base | {"extra_buffers": False}
    configs.update(attention_variants(base))
    return configs


def gpu_candidates(base: dict[str, Any], cpu_repack: bool) -> dict[str, dict[str, Any]]:
    """On a GPU: how many layers to offload, n_batch for prompts, attention settings.
    Threads hardly matter once every layer is on the GPU (they only sample).
    `cpu_repack`: whether weights kept in CPU memory may be repacked (the engine's
    verdict for this CPU), for the variant that leaves layers there."""
    configs = {"engine": base}
    layers = base.get("n_layer") or 0
    if layers:
        # Half the layers stay in CPU memory: repacked only where the CPU is known safe
        # (the engine decides the same way for a partial offload).
        configs[f"n_gpu_layers={layers // 2} (half)"] = base | {"n_gpu_layers": layers // 2,
                                                                "extra_buffers": cpu_repack}
    other = 512 if base["n_batch"] != 512 else 2048
    configs[f"n_batch={other}"] = base | {"n_batch": other}
    configs.update(attention_variants(base))
    return configs


def attention_variants(base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    configs = {}
    configs["flash attn " + ("off" if base["flash_attn"] else "on")] = base | {"flash_attn": not base["flash_attn"]}
    for kv in ("q8_0", "q4_0"):
        if base["kv_cache"] != kv:  # a quantized KV cache needs flash attention
            configs[f"kv {kv} (flash attn on)"] = base | {"flash_attn": True, "kv_cache": kv}
    return configs


def cpu_repack(model_path) -> bool:
    """The engine's repacking verdict for weights left in CPU memory (probed once per CPU)."""
    from mathsolve.engines.llama.repack import decide
    from mathsolve.ggufinfo import read_gguf

    return decide(str(model_path), setting="auto", file_type=read_gguf(str(model_path)).file_type,
                  weights_on_gpu=False, notify=log).extra_buffers


def long_prompt(llm, problems) -> list[int]:
    text = "\n\n".join(p.question for p in problems)
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:1000]


def measure_prompt(llm, tokens: list[int]) -> float:
    cold_kv(llm)
    started = time.perf_counter()
    llm.eval(tokens)
    return len(tokens) / (time.perf_counter() - started)


def measure_generation(llm, tokens: list[int], context: list[int] | None = None) -> float:
    """Tokens per second generating after `tokens`; with `context`, after that long
    prompt already in the KV cache (attention then reads ~1,000 cached positions per
    token, where flash attention and the KV type show)."""
    cold_kv(llm)
    if context:
        llm.eval(context)
        tokens = context + tokens
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
    on_gpu = base["n_gpu_layers"] != 0
    configs = gpu_candidates(base, cpu_repack(ctx.model_path)) if on_gpu else candidates(base)
    llms = {name: raw_llama(ctx.model_path, settings) for name, settings in configs.items()}
    try:
        first = next(iter(llms.values()))
        long_ids = long_prompt(first, gsm8k(12))
        short_ids = first.tokenize(gsm8k(1)[0].question.encode("utf-8"), add_bos=True, special=False)
        variants = {name: (lambda llm=llm: {"prompt": measure_prompt(llm, long_ids),
                                            "generation": measure_generation(llm, short_ids),
                                            "generation_long": measure_generation(llm, short_ids, long_ids)})
                    for name, llm in llms.items()}
        runs = interleaved(variants, reps, "engine settings", warmup=True)
    finally:
        for llm in llms.values():
            llm.close()
    results = {
        name: {"prompt_tok_s": median([r["prompt"] for r in rs]),
               "generation_tok_s": median([r["generation"] for r in rs]),
               "generation_long_tok_s": median([r["generation_long"] for r in rs]),
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
                    f"generation {r['generation_tok_s']:.1f} tok/s, "
                    f"{r['generation_long_tok_s']:.1f} after the prompt", "info", ""))
    return out
