"""mathsolve's own protocols, catalog and engine, registered through the public hooks.

Built-ins go through the same API as third-party plugins; tool backends live under
plugins/ as separate packages found by entry point.
"""

from __future__ import annotations

from mathsolve.hookspecs import hookimpl


@hookimpl
def register_protocols(register):
    from mathsolve.formats.chat_tir import ChatTirProtocol
    from mathsolve.formats.cot import AlpacaCotProtocol, DeepSeekCotProtocol
    from mathsolve.formats.mathcoder import MathCoderProtocol
    from mathsolve.formats.numina import NuminaProtocol
    from mathsolve.formats.tora import QwenCotProtocol, QwenTirProtocol, ToraProtocol

    for protocol in (
        ToraProtocol(),
        MathCoderProtocol(),
        AlpacaCotProtocol(),
        NuminaProtocol(),
        QwenTirProtocol(),
        QwenCotProtocol(),
        DeepSeekCotProtocol(),
        ChatTirProtocol(),
    ):
        register(protocol)


@hookimpl
def register_models(register):
    from mathsolve.catalog import builtin_cards

    for card in builtin_cards():
        register(card)


@hookimpl
def register_engines(register):
    def llama(**kwargs):
        from mathsolve.engines.llama import LlamaEngine

        return LlamaEngine(**kwargs)

    register("llama", llama)

    def openai(**kwargs):
        from mathsolve.engines.openai import OpenAIEngine

        return OpenAIEngine(**kwargs)

    # A remote engine: no model file to resolve; the factory gets model, base_url,
    # api_key_env, request_timeout, n_ctx, verbose and notify (see docs/remote.md).
    openai.remote = True
    register("openai", openai)
