"""The `openai` engine: an OpenAI-compatible server's raw `/v1/completions` endpoint.

For vLLM, llama.cpp's `llama-server` and `llama_cpp.server` (llama-cpp-python). It is raw
completion, never chat: the protocols need byte-exact prompts and their own stop strings. The
server tokenizes the prompt itself, special tokens included (vLLM, llama-server and
llama_cpp.server all parse special-token text in a completion prompt).

- `engine`: OpenAIEngine, which connects, learns what the server serves, opens sessions.
- `session`: a session's context as text, and telling a stop string from EOS.
- `completions`: one /completions call, whole or streamed, bounded in tokens and characters.
- `transport`: HTTP requests, failures sorted into retried and final ones, retries.
- `reading`: reading an answer against a deadline and size bounds; server-sent events.
- `wire`: the API's JSON shapes, read defensively.

Errors end as one-line `EngineError`s (exit code 6); whatever the server does, a request ends.
"""

from mathsolve.engines.openai.engine import OpenAIEngine
from mathsolve.engines.openai.session import OpenAISession
from mathsolve.engines.openai.transport import api_key_from_env, normalize_base_url

__all__ = ["OpenAIEngine", "OpenAISession", "api_key_from_env", "normalize_base_url"]
