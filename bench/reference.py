"""The straightforward reference loop that section 6 compares mathsolve with.

What the reference harnesses (ToRA's, and Qwen2.5-Math's fork of it) do, on raw
llama-cpp-python: every round re-submits the whole transcript TEXT to
`Llama.create_completion` (llama-cpp-python still re-uses the KV cache for the
longest common token prefix, as vLLM's prefix caching would), the round is
right-stripped, and when it ends in a code fence without mentioning `boxed`, the
last python block of the text runs in a cold `python` subprocess with a 5 s
timeout and its result is appended as "\\n```output\\n...\\n```\\n". The prompt,
stop strings, observation text and round limit are the protocol's own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mathsolve.formats.base import last_fenced_block
from mathsolve.tools import ToolResult

TIMEOUT_S = 5.0


def run_cold(code: str, timeout: float = TIMEOUT_S) -> ToolResult:
    """One block in a fresh interpreter, in a throw-away working directory."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "block.py"
        path.write_text(code, encoding="utf-8")
        try:
            proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                                  timeout=timeout, cwd=tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return ToolResult(tool="cold-python", status="timeout")
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return ToolResult(tool="cold-python", status="error", stdout=proc.stdout,
                          error=lines[-1] if lines else f"exit {proc.returncode}")
    return ToolResult(tool="cold-python", status="ok", stdout=proc.stdout)


@contextlib.contextmanager
def count_evaluations(llm) -> Iterator[list[int]]:
    """Count every token this Llama evaluates (as mathsolve's engine counts its own)."""
    counter = [0]
    original = llm.eval

    def counted(tokens):
        counter[0] += len(tokens)
        return original(tokens)

    llm.eval = counted
    try:
        yield counter
    finally:
        del llm.eval  # the class's method again


def reference_solve(llm, protocol, question: str) -> dict[str, Any]:
    """Solve one question the reference way; the solution text and what it took."""
    prompt = protocol.prompt(question)
    text, rounds, blocks, generated = prompt, 0, 0, 0
    for round_index in range(protocol.max_rounds):
        rounds += 1
        try:
            out = llm.create_completion(
                text, max_tokens=protocol.max_new_tokens, stop=list(protocol.stops),
                temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0,
            )
        except ValueError:  # the transcript no longer fits the context
            break
        generated += out["usage"]["completion_tokens"]
        output = out["choices"][0]["text"].rstrip()
        text += output
        if "boxed" in output or not output.endswith("```"):
            break
        result = run_cold(last_fenced_block(text))
        blocks += 1
        text += protocol.observation(result)
        if round_index == protocol.max_rounds - 1:
            text += protocol.after_last_round()
    return {"solution": text[len(prompt):], "rounds": rounds, "tool_calls": blocks, "generated": generated}
