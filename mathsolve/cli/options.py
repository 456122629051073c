"""The options every solving command shares (`solve` and `eval`), declared once.

Each is a setting (mathsolve.settings): the flag overrides the environment variable and
the config file, and is validated there, with its range, like the other two sources.
`@settings_options` adds them all to a command, which receives the given ones as `flags`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import typer

# (setting, type, flag names, help)
SHARED: tuple[tuple[str, Any, tuple[str, ...], str], ...] = (
    ("model", Optional[str], ("--model", "-m"), "Catalog NAME[:QUANT] or a path to a .gguf file."),
    ("protocol", Optional[str], ("--protocol", "-p"), "Prompt/tool protocol (tora, qwen-tir, ...)."),
    ("reasoning", Optional[str], ("--reasoning",), "Reasoning effort: low|medium|high (harmony; default: the protocol's)."),
    ("thinking", Optional[str], ("--thinking",), "Thinking on|off (qwen3-tir; default: the protocol's)."),
    ("grader", Optional[str], ("--grader",), "Who judges answers: reference|math-verify|auto (default: the protocol's)."),
    ("tool", Optional[str], ("--tool",), "Run every code block with this tool backend."),
    ("tool_timeout", Optional[float], ("--tool-timeout",), "Seconds each code block may run (default: the protocol's)."),
    ("temperature", Optional[float], ("--temperature", "-t"), "0 = greedy (default)."),
    ("top_p", Optional[float], ("--top-p",), "Nucleus sampling (default 1)."),
    ("top_k", Optional[int], ("--top-k",), "Top-k sampling (default 0: off)."),
    ("min_p", Optional[float], ("--min-p",), "Min-p sampling (default 0: off)."),
    ("seed", Optional[int], ("--seed",), "Sampling seed (eval: also draws --sample)."),
    ("max_rounds", Optional[int], ("--max-rounds",), "Tool rounds (default: the protocol's)."),
    ("max_tokens", Optional[int], ("--max-tokens",), "New tokens per round."),
    ("n_ctx", Optional[int], ("--n-ctx",), "Context size in tokens."),
    ("threads", Optional[int], ("--threads",), "CPU threads (default: the cores this process may use)."),
    ("n_gpu_layers", Optional[int], ("--n-gpu-layers",), "-1 = all (default when the build can offload)."),
    ("extra_buffers", Optional[str], ("--extra-buffers",), "llama.cpp weight repacking: auto|on|off."),
    ("flash_attn", Optional[str], ("--flash-attn",),
     "Flash attention: auto (on for GPU layers or a quantized KV cache) | on | off."),
    ("kv_cache", Optional[str], ("--kv-cache",), "KV cache type: f16 (default) | q8_0 (half the memory) | q4_0 (a quarter)."),
    ("offline", Optional[bool], ("--offline/--online",), "Never use the network."),
    ("verbose", Optional[bool], ("--verbose", "-v"), "llama.cpp logs and tracebacks."),
    ("engine", Optional[str], ("--engine",),
     "Inference engine: llama (local GGUF, the default) or openai (an OpenAI-compatible server)."),
    ("base_url", Optional[str], ("--base-url",), "Engine openai: the server's API root, e.g. http://HOST:8000/v1."),
    ("api_key_env", Optional[str], ("--api-key-env",),
     "Engine openai: name of the environment variable holding the server's API key."),
    ("request_timeout", Optional[float], ("--request-timeout",),
     "Engine openai: seconds without progress from the server before a request fails (default 600)."),
    ("concurrency", Optional[int], ("--concurrency",),
     "Problems in flight at once in batches and evals (default 1)."),
    ("parallel", Optional[int], ("--parallel",),
     "Sequences generating at once: samples of -n and problems in flight (default: 8 on the CPU, 32 with GPU "
     "layers, 8 for a server; capped by the KV cache memory)."),
    ("early_stop", Optional[str], ("--early-stop",),
     "-n: stop once N samples agree; off: run every sample (default auto: stop once the leader cannot be overtaken)."),
    ("time_budget", Optional[float], ("--time-budget",),
     "Seconds per problem; then the samples still running are cancelled and the vote uses what finished."),
)


def settings_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` every shared option; it is called with them gathered in `flags`."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "flags"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                          default=typer.Option(None, *names, help=help_text))
        for name, kind, names, help_text in SHARED
    ]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name, *_ in SHARED}
        return command(flags=flags, **kwargs)

    # Typer reads the command's parameters from its signature: the command's own, then these.
    del run.__wrapped__
    run.__signature__ = inspect.Signature([*own, *shared])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
    return run
