"""The shapes of the OpenAI completions API as servers really send them, read defensively.

A server's JSON is checked field by field: a value of the wrong type is a malformed answer
(ValueError), never a crash deep inside the engine. Context-length errors are recognised here,
however vLLM, llama-server or llama_cpp.server phrase them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_CONTEXT_WORDS = re.compile(r"context (length|size|window)|maximum context|too long|exceeds? the", re.I)


@dataclass
class Reply:
    """One completion as it came: text, finish reason, the raw choice (for stop-vs-EOS fields)."""

    text: str
    finish_reason: str | None
    choice: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    chunks: int = 0  # streamed pieces with text (an estimate of tokens when usage is missing)


def parse_json(text: str) -> Any:
    """JSON from the server; nesting deep enough to exhaust the stack is malformed too (ValueError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def parse_reply(payload: Any) -> Reply:
    """A whole (not streamed) completion answer; ValueError when it holds no usable choice."""
    found = choices(payload)
    if not found:
        message = payload.get("error") if isinstance(payload, dict) else None
        raise ValueError(f"no choices in the answer{': ' + clip(message) if message else ''}")
    choice = found[0]
    usage = payload.get("usage")
    return Reply(text=text_of(choice), finish_reason=finish_of(choice), choice=choice,
                 usage=usage if isinstance(usage, dict) else None)


def choices(payload: Any) -> list[dict[str, Any]]:
    """The answer's choices that are objects (anything else in the list is skipped)."""
    found = payload.get("choices") if isinstance(payload, dict) else None
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def text_of(choice: dict[str, Any]) -> str:
    text = choice.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError("a choice's text is not a string")
    return text or ""


def finish_of(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError("a choice's finish_reason is not a string")
    return reason


def cut(reply: Reply, chars: int) -> Reply:
    """A generation the server ran past its bounds ends as if max_tokens was reached."""
    reply.text = reply.text[:chars]
    reply.finish_reason = "length"
    reply.choice = {}
    return reply


def max_tokens_of(body: dict[str, Any]) -> int:
    """The request's max_tokens, at least 1 (the bounds on the answer are computed from it)."""
    return max(1, as_int(body.get("max_tokens")) or 1)


def clip(value: Any) -> str:
    """A server's value for a one-line message: whitespace folded, 300 characters at most."""
    try:
        text = value if isinstance(value, str) else str(value)
    except (RecursionError, ValueError):  # nested deep, or an integer too long to print
        text = type(value).__name__
    return " ".join(text[:2000].split())[:300]


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: JSON's 1e999 is infinity
        return None


def server_n_ctx(props: dict[str, Any]) -> int | None:
    """The context size in llama-server's /props, if it says."""
    settings = props.get("default_generation_settings")
    return as_int(settings.get("n_ctx")) if isinstance(settings, dict) else None


def is_context_error(error: dict[str, Any], message: str) -> bool:
    """Whether an HTTP 400's error says the prompt plus max_tokens does not fit the context."""
    code = str(error.get("code") or "") + " " + str(error.get("type") or "")
    return "context_length" in code or "exceed_context" in code or bool(_CONTEXT_WORDS.search(message))


def budget_from_error(message: str, error: dict[str, Any]) -> int | None:
    """New tokens that still fit, from a context-length error's numbers (vLLM, llama_cpp.server
    and llama-server phrase it differently)."""
    n_ctx = as_int(error.get("n_ctx"))
    prompt = as_int(error.get("n_prompt_tokens"))
    if n_ctx is None:
        m = re.search(r"maximum context length is (\d+)", message)
        n_ctx = int(m.group(1)) if m else None
    if prompt is None:
        m = re.search(r"(\d+) (?:in your prompt|in the messages|input tokens)|prompt contains (?:at least )?(\d+)", message)
        prompt = int(m.group(1) or m.group(2)) if m else None
    if n_ctx is None or prompt is None:
        return None
    return n_ctx - prompt
