"""Self-consistency: majority vote over the answers of K sampled solutions.

Answers are grouped by mathematical equivalence (the grader's `equal`, not string
equality: "1/2", "0.5" and "\\frac{1}{2}" are one vote). A sample joins the first
group whose representative it equals. The group with the most votes wins; a tie
goes to the group whose first sample came first, so the result is deterministic.

Early stop (`stop_reason`): while samples are still running, the vote can end once
  - `agreed`: N samples agree (`--early-stop N`; AIMO-3's public gpt-oss pipeline ran 8
    attempts and stopped at 4 agreeing). This can change the winner: the samples it
    cancels might have outvoted (or tied and preceded) the N.
  - `unbeatable`: the leader cannot be overtaken, nor tied by a group that would win the
    tie, even if every sample still running joined its strongest rival (or formed a new
    group from their earliest sample). Then the full vote would pick the same group, so
    this rule is on by default; it assumes answer equivalence is transitive, as grouping
    by a representative already does.
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


def unbeatable(groups: list[VoteGroup], remaining: list[int]) -> bool:
    """Whether `groups[0]` (majority's order) still wins whatever the samples in
    `remaining` (indexes of samples not finished) answer."""
    if not groups:
        return False
    leader = groups[0]
    first_remaining = min(remaining, default=None)
    # Each rival, and a group the remaining samples might form on their own.
    rivals = [(g.count, g.samples[0]) for g in groups[1:]] + [(0, None)]
    for count, first in rivals:
        best = count + len(remaining)
        if best > leader.count:
            return False
        if best == leader.count:  # a tie goes to the group whose first sample came first
            firsts = [i for i in (first, first_remaining) if i is not None]
            if firsts and min(firsts) < leader.samples[0]:
                return False
    return True


def stop_reason(groups: list[VoteGroup], remaining: list[int], *, agree: int | None,
                stop_unbeatable: bool) -> str | None:
    """Why the vote can end now with samples still `remaining`: "agreed", "unbeatable"
    or None (go on)."""
    if not groups or not remaining:
        return None
    if agree and groups[0].count >= agree:
        return "agreed"
    if stop_unbeatable and unbeatable(groups, remaining):
        return "unbeatable"
    return None
