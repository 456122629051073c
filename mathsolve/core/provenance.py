"""What produced a record: the settings that decide a batch's answers.

Every record of a batch or evaluation carries them as `run`. Resuming into a records
file made with other settings would silently mix two experiments (the accuracy of one
reported as the other's), so a batch compares its own `run` with the file's records
before solving anything, and refuses (or, for `eval`'s default file name, writes to
another file) when they differ.

Included: the model file (or a server's model id), protocol, engine, samples per
problem, the effective sampling of the first sample, round and token limits, context
size, KV cache type, forced tool and tool time-out, and the grader. Left out: what only
changes speed (threads, GPU layers, flash attention, weight repacking, concurrency).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Iterable

GRADER = "reference"  # the reference harnesses' equivalence rules (mathsolve.scoring.equivalence)


def run_settings(settings, samples: int) -> dict[str, Any]:
    """The `run` block of this batch's records, computed before any model is loaded."""
    from mathsolve import registry
    from mathsolve.api import sampling_for

    model, protocol_name = _model_and_protocol(settings)
    published = registry.protocol(protocol_name).sampling if protocol_name else None
    sampling = sampling_for(settings, published, sample=0 if samples > 1 else None)
    return {
        "model": model,
        "protocol": protocol_name,
        "engine": settings.engine,
        "samples": samples,
        "sampling": asdict(sampling),
        "reasoning": settings.reasoning,
        "thinking": settings.thinking,
        "max_rounds": settings.max_rounds,
        "max_tokens": settings.max_tokens,
        "n_ctx": settings.n_ctx,
        "kv_cache": settings.kv_cache,
        "tool": settings.tool,
        "tool_timeout": settings.tool_timeout,
        "grader": GRADER,
    }


def _model_and_protocol(settings) -> tuple[str, str | None]:
    """The model file's name (a catalog reference resolved without any download) and the
    protocol it will run with; a server's model id as given."""
    from mathsolve import registry
    from mathsolve.core.models import looks_like_path

    ref, protocol = settings.model, settings.protocol
    if not registry.is_local_engine(settings.engine):
        return ref, protocol
    if looks_like_path(ref):
        return ref.replace("\\", "/").rsplit("/", 1)[-1], protocol
    try:
        card, gguf = registry.catalog().resolve(ref)
    except Exception:  # noqa: BLE001 - an unknown name fails with its own message when loading
        return ref, protocol
    return gguf.file, protocol or card.protocol


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`name: recorded -> current` for each setting that differs."""
    return [f"{key}: {_show(recorded.get(key))} -> {_show(current.get(key))}"
            for key in current if key in recorded and recorded.get(key) != current.get(key)]


def _legacy_run(record: dict[str, Any]) -> dict[str, Any]:
    """What a record written before `run` existed still says about its settings."""
    known: dict[str, Any] = {}
    if isinstance(record.get("protocol"), str):
        known["protocol"] = record["protocol"]
    model = record.get("model")
    if isinstance(model, dict) and isinstance(model.get("file"), str):
        known["model"] = model["file"].replace("\\", "/").rsplit("/", 1)[-1]
    return known


def first_conflict(records: Iterable[dict[str, Any]], current: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(record id, differences) of the first solved record made with other settings."""
    for record in records:
        if record.get("status") == "input-error":
            continue  # no settings decided those
        recorded = record.get("run") if isinstance(record.get("run"), dict) else _legacy_run(record)
        diff = differences(recorded, current)
        if diff:
            return str(record.get("id")), diff
    return None


def digest(current: dict[str, Any]) -> str:
    """A short name for a set of settings (eval's file name when the default one is taken)."""
    return hashlib.sha1(json.dumps(current, sort_keys=True).encode()).hexdigest()[:8]


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
