"""Evaluation: which problems a data set name means, the file an eval writes, and the
report read back from it (accuracy beside the published score)."""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path
from typing import Any

from mathsolve.core.batch import read_records
from mathsolve.core.problems import Problem, is_problem_file, read_problems
from mathsolve.errors import UsageError

BUNDLED = {"gsm8k": "gsm8k.jsonl", "math500": "math500.jsonl"}
_ALIASES = {"math-500": "math500", "math_500": "math500", "gsm-8k": "gsm8k"}


def dataset_source(name: str) -> tuple[str, str | None]:
    """(file to read, data set name for ground-truth parsing) for a bundled NAME or a PATH."""
    from mathsolve.scoring.ground_truth import DATASETS

    key = _ALIASES.get(name.lower(), name.lower())
    if key in BUNDLED and not is_problem_file(name):
        return str(resources.files("mathsolve.datasets").joinpath(BUNDLED[key])), key
    path = Path(name)
    if not is_problem_file(name):
        raise UsageError(f"unknown data set {name!r}: bundled ones are {', '.join(BUNDLED)}; or give a file path")
    stem = path.stem.lower().replace("_", "-")
    return str(path), stem if stem in DATASETS else None


def select(problems: list[Problem], *, offset: int, limit: int | None, sample: int | None, seed: int) -> list[Problem]:
    """--offset/--limit slice the set in its order; --sample N then draws N of those
    with the seed (sorted back into file order, so runs are comparable)."""
    chosen = problems[offset:]
    if limit is not None:
        chosen = chosen[:limit]
    if sample is not None and sample < len(chosen):
        picked = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in picked]
    return chosen


def eval_problems(dataset: str, *, field: str | None, offset: int, limit: int | None, sample: int | None,
                  seed: int, warn=None) -> tuple[list[Problem], str | None]:
    path, name = dataset_source(dataset)
    shown = Path(path).name if path != dataset else dataset  # a bundled set by its file name, not its install path
    problems = list(read_problems([path], field=field, dataset=name, shown_as=[shown], warn=warn))
    return select(problems, offset=offset, limit=limit, sample=sample, seed=seed), name


def default_output(dataset: str, model: str, run: dict[str, Any] | None = None, notify=None) -> Path:
    """`DATASET.MODEL.jsonl`, or, when that file holds records of other settings,
    `DATASET.MODEL.<settings digest>.jsonl` (said through `notify`): an eval with other
    settings never mixes its records into another's."""
    from mathsolve.core.provenance import digest, first_conflict

    base = Path(dataset).stem if is_problem_file(dataset) else dataset
    # A server's model id may hold slashes (llm-agents/tora-code-34b-v1.0): one file name.
    name = Path(model).stem if model.endswith(".gguf") else model.strip("/").replace(":", "-").replace("/", "-")
    stem = _safe_name(f"{base}.{name}")
    path = Path(f"{stem}.jsonl")
    if run is None:
        return path
    try:
        conflict = first_conflict(read_records(path).values(), run)
    except (UsageError, OSError):
        return path  # not a records file: ResultsFile refuses it with the reason
    if conflict is None:
        return path
    other = Path(f"{stem}.{digest(run)}.jsonl")
    if notify is not None:
        notify(f"{path} holds records of other settings ({conflict[1][0]}); this run writes {other}")
    return other


def _safe_name(name: str) -> str:
    """A file name from a data set and model name: no separators or odd characters."""
    cleaned = "".join(c if c.isalnum() or c in "._-+" else "-" for c in name).strip(".")
    return cleaned[:200] or "eval"


def eval_report(output: Path, dataset: str, name: str | None, problems: list[Problem], settings, samples: int) -> dict[str, Any]:
    """Accuracy over the selected problems, read back from the records file (so a
    resumed run reports the whole selection), beside the published score."""
    ids = {p.id for p in problems}
    records = [r for r in read_records(output).values() if r.get("id") in ids]
    graded = [r for r in records if "correct" in r]
    correct = sum(bool(r["correct"]) for r in graded)
    report: dict[str, Any] = {
        "dataset": dataset,
        "model": settings.model,
        "problems": len(ids),
        "records": len(records),
        "graded": len(graded),
        "correct": correct,
        "accuracy": round(correct / len(graded), 4) if graded else None,
        "samples": samples,
        "output": str(output),
    }
    if samples > 1:
        report["maj@k"] = report["accuracy"]
        report["pass@k"] = round(sum(bool((r.get("vote") or {}).get("pass")) for r in graded) / len(graded), 4) if graded else None
        # Samples an early stop or the time budget cancelled: pass@K counts only those that ended.
        report["cancelled_samples"] = sum(s.get("status") == "cancelled"
                                          for r in records for s in r.get("samples") or [])
    report["published"] = _published(settings.model, name)
    return report


def _published(model: str, name: str | None) -> float | None:
    """The catalog's published score for this model on this set, when it has one."""
    if name not in ("gsm8k", "math"):
        return None
    try:
        from mathsolve import registry

        card, _ = registry.catalog().resolve(model)
    except Exception:  # noqa: BLE001 - a path or an unknown name has no published score
        from mathsolve.core.models import card_for_served_model

        card = card_for_served_model(model) if "/" in model else None  # a server's model id
        if card is None:
            return None
    return card.scores.get(name)
