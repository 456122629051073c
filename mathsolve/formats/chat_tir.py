"""`chat-tir`: tools behind any instruction-tuned GGUF, through its own chat template.

Not a reference protocol: it is how a user puts the Python tool behind a model that was
never trained on a tool format. The prompt is the chat template embedded in the GGUF
(rendered like the Hugging Face tokenizer renders it), with a system instruction to
compute in ```python blocks and box the final answer. Each python block runs as soon
as its closing fence is written, and its output is appended as an ```output block,
the convention most code-trained chat models already know.
"""

from __future__ import annotations

import copy
import functools
import json
from datetime import datetime
from typing import Any

from mathsolve.errors import UsageError
from mathsolve.formats.base import Continue, Execute, Finish, Generation, ModelInfo, Step, last_fenced_block
from mathsolve.formats.tora import ToraProtocol

SYSTEM = (
    "Solve the math problem step by step. When a computation helps, write Python code in a "
    "```python block and print the results; each block is run as soon as it is closed, and "
    "its printed output is shown to you in an ```output block. Use the output to continue. "
    "Put the final answer within \\boxed{}."
)
_CODE_LANGUAGES = ("python", "py", "python3")


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    model: ModelInfo,
    *,
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """Render a Hugging Face style Jinja chat template, as `apply_chat_template` does.

    `tools`: function schemas, for templates that declare tools (left undefined when None,
    as the tokenizer leaves it); `variables`: more template variables (`enable_thinking`).
    """
    context: dict[str, Any] = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "bos_token": model.bos_token,
        "eos_token": model.eos_token,
        **variables,
    }
    if tools is not None:
        context["tools"] = tools
    return _compiled(template).render(**context)


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    """The template compiled in the environment transformers' `_compile_jinja_template`
    builds (compiled once per template: tool protocols render it at every tool call)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        # transformers replaces Jinja's own `tojson` (which escapes <, >, & and ' as HTML and
        # sorts keys) with plain json.dumps: tool schemas and call arguments are rendered so.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def bind_template(protocol, model: ModelInfo, fix: str):
    """A copy of `protocol` holding `model` and its chat template, for protocols whose
    prompt is the model's own template; `fix` ends the error when the GGUF has none."""
    if not model.chat_template:
        raise UsageError(
            f"the {protocol.name} protocol needs the model's chat template, and {model.name or 'this model'} has "
            f"none in its GGUF (tokenizer.chat_template); {fix}"
        )
    bound = copy.copy(protocol)
    bound.template, bound.model = model.chat_template, model
    return bound


def fence_state(text: str) -> tuple[bool, str | None]:
    """(inside a block, language of the last opened block) after reading `text` line by line."""
    inside, language = False, None
    for line in text.split("\n"):
        if not line.startswith("```"):
            continue
        if inside:
            inside = False
        else:
            inside, language = True, line[3:].strip().lower() or None
    return inside, language


class ChatTirProtocol(ToraProtocol):
    name = "chat-tir"
    description = "any chat model: its GGUF chat template, python blocks run when their fence closes"
    stops = ("```\n", "```output")
    max_rounds = 8
    max_new_tokens = 2048
    context = 4096
    special_prompt = True
    answer_style = "tora"
    boxed_stops = False
    system = SYSTEM
    template: str | None = None
    model = ModelInfo()

    def bind(self, model: ModelInfo) -> ChatTirProtocol:
        return bind_template(self, model, "choose another --protocol")

    def prompt(self, question: str) -> str:
        if self.template is None:
            raise UsageError("the chat-tir protocol must be bound to a model first (Protocol.bind)")
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": question}]
        try:
            text = render_chat(self.template, messages, self.model)
        except Exception:  # templates without a system role (Gemma ...) raise
            merged = [{"role": "user", "content": self.system + "\n\n" + question}]
            try:
                text = render_chat(self.template, merged, self.model)
            except Exception as exc:
                raise UsageError(f"the model's chat template cannot be rendered: {exc}") from None
        if self.model.add_bos and self.model.bos_token and text.startswith(self.model.bos_token):
            text = text[len(self.model.bos_token) :]  # the engine adds BOS itself
        return text

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        text = generation.text
        if generation.stop == "```\n":
            # A fence line was just written: run the block if this closes a python one.
            inside, language = fence_state(text_so_far + text + "```")
            if inside or language not in _CODE_LANGUAGES:
                return Continue(keep=text + generation.stop)
            keep = text + "```"
        else:
            keep = text.rstrip()
            inside, language = fence_state(text_so_far + keep)
            # The model wrote its own ```output (stop) or ended its turn right after a
            # closed python block without an answer: run the block, as ToRA does.
            ends_in_code = keep.endswith("```") and not inside and language in _CODE_LANGUAGES
            if not ends_in_code or (generation.stop is None and "boxed" in keep):
                return Finish(keep=keep)
        code = last_fenced_block(text_so_far + keep, language or "python")
        return Execute(keep=keep, code=code)
