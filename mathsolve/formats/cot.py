"""Chain-of-thought protocols without tools: DART-Math (`alpaca-cot`) and
DeepSeekMath-RL (`deepseek-cot`). One generation, no code execution."""

from __future__ import annotations

from mathsolve.formats.base import Finish, Generation, Protocol, Step


class _SingleRound(Protocol):
    max_rounds = 1
    tool = None

    def step(self, text_so_far: str, generation: Generation, round_index: int) -> Step:
        return Finish(keep=generation.text)


class AlpacaCotProtocol(_SingleRound):
    """DART-Math's Alpaca template, as its evaluation harness builds it."""

    name = "alpaca-cot"
    description = "DART-Math: Alpaca instruction template, chain of thought, no tools"
    stops = ("### Instruction:", "### Response:")
    max_new_tokens = 2048
    context = 4096
    answer_style = "dart"
    # The harness counts a solution the token limit cut off as wrong.
    truncated_is_wrong = True

    def prompt(self, question: str) -> str:
        return (
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\n" + question + "\n\n### Response:\n"
        )


class DeepSeekCotProtocol(_SingleRound):
    """DeepSeekMath-7B-RL's plain-text User/Assistant prompt (as DART-Math's harness used it)."""

    name = "deepseek-cot"
    description = "DeepSeekMath-RL: User/Assistant plain text, chain of thought, no tools"
    stops = ()  # EOS only
    max_new_tokens = 2048
    context = 4096
    answer_style = "tora"

    def prompt(self, question: str) -> str:
        return (
            "User: " + question
            + "\nPlease reason step by step, and put your final answer within \\boxed{}.\n\nAssistant:"
        )
