"""Self-consistency: majority vote over the answers of K sampled solutions.

Answers are grouped by mathematical equivalence (the grader's `equal`, not string
equality: "1/2", "0.5" and "\\frac{1}{2}" are one vote). A sample joins the first
group whose representative it equals. The group with the most votes wins; a tie
goes to the group whose first sample came first, so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class VoteGroup:
    answer: str  # the representative: the first sample's answer in this group
    samples: list[int] = field(default_factory=list)  # sample indexes, in order

    @property
    def count(self) -> int:
        return len(self.samples)


def eligible(record: dict[str, Any], protocol_name: str) -> bool:
    """Whether a sample may vote. NuminaMath's SC-TIR dropped samples without any
    executed code output or without a boxed answer; other protocols keep every sample
    that has an answer."""
    if not record.get("answer"):
        return False
    if protocol_name == "numina":
        ran_code = any(call.get("status") for call in record.get("tool_calls", []))
        boxed = "boxed" in "".join(seg["text"] for seg in record.get("transcript", []) if seg["role"] == "model")
        return ran_code and boxed
    return True


def majority(answers: list[str | None], equal: Callable[[str, str], bool]) -> list[VoteGroup]:
    """Groups of equivalent answers, the winner first (most votes, then earliest)."""
    groups: list[VoteGroup] = []
    for index, answer in enumerate(answers):
        if not answer:
            continue
        for group in groups:
            if answer == group.answer or equal(answer, group.answer):
                group.samples.append(index)
                break
        else:
            groups.append(VoteGroup(answer, [index]))
    return sorted(groups, key=lambda g: (-g.count, g.samples[0]))
