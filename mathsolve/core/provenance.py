"""What produced a record: the settings that decide a batch's answers.

Every record of a batch or evaluation carries them as `run`. Resuming into a records
file made with other settings would silently mix two experiments (the accuracy of one
reported as the other's), so a batch compares its own `run` with the file's records
before solving anything, and refuses (or, for `eval`'s default file name, writes to
another file) when they differ.

Included: the model file (or a server's model id), protocol, engine, samples per
problem, the effective sampling of the first sample, round and token limits, context
size, KV cache type, forced tool and tool time-out, the grader (the one `--grader`
means for this run's protocol: `auto` is resolved here, so a record says which rules judged
it), the time budget, and with samples the early-stop rule (both can change a vote: they
cancel samples). Left out: what only changes speed (threads, GPU layers, flash attention,
weight repacking, concurrency, parallel). Decoding several sequences together (concurrency
or parallel above one on the local engine) can change a quantized model's greedy text at a
near tie, as any batching server does (docs/performance.md, section 8); that is a numeric
effect of the batch's makeup, not a setting of what is computed, so it is not recorded either.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Iterable

from mathsolve.errors import UsageError


def run_settings(settings, samples: int) -> dict[str, Any]:
    """The `run` block of this batch's records, computed before any model is loaded."""
    from mathsolve import registry
    from mathsolve.api import sampling_for

    model, protocol_name = _model_and_protocol(settings)
    protocol = None
    if protocol_name:
        try:  # the sampling a protocol publishes may depend on --thinking (qwen3-tir)
            protocol = registry.protocol(protocol_name).configure(reasoning=settings.reasoning,
                                                                  thinking=settings.thinking)
        except UsageError:
            protocol = registry.protocol(protocol_name)  # the solve itself reports the bad choice
    published = protocol.sampling if protocol is not None else None
    sampling = sampling_for(settings, published, sample=0 if samples > 1 else None,
                            sampled=bool(protocol is not None and protocol.sampled))
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
        "grader": run_grader(settings, model, protocol),
        "time_budget": settings.time_budget,
        **({"early_stop": early_stop_rule(settings)} if samples > 1 else {}),
    }


def early_stop_rule(settings) -> str | int:
    """The `early_stop` setting as a record states it: "unbeatable" (auto), "off", or N."""
    value = settings.early_stop
    return "unbeatable" if value is None else "off" if value == 0 else value


def run_grader(settings, model: str, protocol) -> str:
    """The grader this run's records are judged with: `--grader`, with `auto` meaning the
    protocol's. Without --protocol, the protocol is the catalog entry's the model (a file
    name, a served model id) belongs to, as the solver will pick it."""
    from mathsolve.scoring.graders import effective_grader

    if protocol is None and settings.grader == "auto":
        protocol = _catalog_protocol(model)
    return effective_grader(settings.grader, protocol)


def _catalog_protocol(model: str):
    """The protocol of the catalog entry `model` names, or None."""
    from mathsolve import registry
    from mathsolve.core.models import card_for_served_model

    try:
        card = card_for_served_model(model)
        return registry.protocol(card.protocol) if card is not None else None
    except Exception:  # noqa: BLE001 - an unknown model or protocol fails with its own message when loading
        return None


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
