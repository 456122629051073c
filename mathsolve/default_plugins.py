"""mathsolve's own protocols, catalog and engine, registered through the public hooks.

Built-ins go through the same API as third-party plugins; tool backends live under
plugins/ as separate packages found by entry point.
"""

from __future__ import annotations

from mathsolve.hookspecs import hookimpl


@hookimpl
def register_protocols(register):
    from mathsolve.formats import builtin_protocols

    for protocol in builtin_protocols():
        register(protocol())


@hookimpl
def register_models(register):
    from mathsolve.catalog import builtin_cards

    for card in builtin_cards():
        register(card)


@hookimpl
def register_engines(register):
    def llama(request):
        from mathsolve.engines.llama import LlamaEngine

        return LlamaEngine(
            request.model_path, n_ctx=request.n_ctx, n_gpu_layers=request.n_gpu_layers, threads=request.threads,
            extra_buffers=request.extra_buffers, flash_attn=request.flash_attn, kv_cache=request.kv_cache,
            verbose=request.verbose, notify=request.notify,
        )

    register("llama", llama)

    def openai(request):
        from mathsolve.engines.openai import OpenAIEngine

        return OpenAIEngine(
            base_url=request.base_url, model=request.model, api_key_env=request.api_key_env,
            request_timeout=request.request_timeout, n_ctx=request.n_ctx, verbose=request.verbose,
            notify=request.notify,
        )

    # A remote engine: no model file to resolve (see docs/remote.md).
    register("openai", openai, local=False)
