"""Ground truth per data set: the reference answer of an evaluation record.

Each evaluation set stores its answer differently (GSM8K after "####", MATH boxed in the
solution, SVAMP as a number in "Answer", ...); :func:`parse_ground_truth` reads it the way
the reference harness did and normalises it like a prediction. Add a data set here.
"""

from __future__ import annotations

import re
from typing import Any

from mathsolve.scoring.answer import find_last_boxed, strip_string

__all__ = ["DATASETS", "parse_ground_truth"]

# Data set name -> canonical name. Each evaluation set stores its answer differently.
_DATASET_ALIASES = {
    "gsm8k": "gsm8k",
    "math": "math",
    "math500": "math500",
    "math-500": "math500",
    "math_500": "math500",
    "svamp": "svamp",
    "asdiv": "asdiv",
    "mawps": "mawps",
    "gsm-hard": "gsm-hard",
    "gsm_hard": "gsm-hard",
    "gsmhard": "gsm-hard",
    "aime24": "aime24",
    "amc23": "amc23",
    "minerva_math": "minerva_math",
    "minerva-math": "minerva_math",
    "minerva": "minerva_math",
    "theoremqa": "theoremqa",
    "theorem_qa": "theoremqa",
    "deepmind-mathematics": "deepmind-mathematics",
    "deepmind_mathematics": "deepmind-mathematics",
    "tora": "tora",
}
DATASETS = tuple(sorted(set(_DATASET_ALIASES.values())))


def _detect_dataset(record: dict[str, Any]) -> str:
    """Guess the data set from the record's field names."""
    keys = set(record)
    if {"question", "gt", "code"} <= keys:
        return "tora"  # released ToRA outputs carry their ground truth as "gt"
    if "Answer" in keys and ("Answer_type" in keys or "theorem" in keys):
        return "theoremqa"
    if {"Answer", "Body", "Equation"} <= keys:
        return "svamp"
    if {"body", "formula", "answer"} <= keys:
        return "asdiv"
    if {"target", "code"} <= keys:
        return "gsm-hard"
    if "target" in keys:
        return "mawps"
    if "answer" in keys and isinstance(record["answer"], str) and "####" in record["answer"]:
        return "gsm8k"
    if "answer" in keys and "unique_id" in keys:
        return "math500"
    if "answer" in keys and "url" in keys:
        return "aime24" if isinstance(record["answer"], str) else "amc23"
    if "solution" in keys and "answer" not in keys:
        return "math"  # MATH and Minerva keep the answer boxed in the solution
    if "answer" in keys:
        return "deepmind-mathematics"
    raise ValueError(f"cannot tell the data set of a record with fields {sorted(keys)}")


def _format_number(value: object) -> str:
    """Ground truths stored as JSON numbers: 27.0 -> "27" (strip_string drops ".0")."""
    return str(value)


def _raw_ground_truth(record: dict[str, Any], dataset: str) -> str:
    if dataset == "gsm8k":
        return str(record["answer"]).split("####")[-1].replace(",", "").strip()
    if dataset in ("math", "minerva_math"):
        boxed = find_last_boxed(str(record["solution"]))
        if boxed is None:
            raise ValueError("the solution has no \\boxed{} answer")
        return boxed
    if dataset == "svamp":
        return _format_number(record["Answer"])
    if dataset == "asdiv":
        # "9 (apples)": the unit in parentheses is not part of the answer.
        return re.sub(r"\(.*?\)", "", str(record["answer"])).strip()
    if dataset in ("mawps", "gsm-hard"):
        return _format_number(record["target"])
    if dataset == "theoremqa":
        return _format_number(record["Answer"])
    if dataset == "tora":
        return str(record["gt"])
    # math500, aime24, amc23, deepmind-mathematics: a plain "answer" field.
    return _format_number(record["answer"])


def parse_ground_truth(record: dict[str, Any], dataset: str | None = None) -> str:
    """The normalised reference answer of an evaluation record.

    ``dataset`` names the evaluation set (see ``DATASETS``); ``None`` detects it from
    the record's fields. Raises ``ValueError`` for an unknown set or a record without
    a usable answer.
    """
    if dataset is None:
        name = _detect_dataset(record)
    else:
        name = _DATASET_ALIASES.get(dataset.lower())
        if name is None:
            raise ValueError(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
    try:
        raw = _raw_ground_truth(record, name)
    except KeyError as exc:
        raise ValueError(f"{name} record has no {exc.args[0]!r} field") from None
    return strip_string(raw)
