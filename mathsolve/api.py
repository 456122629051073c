"""The Python API, which the CLI itself uses.

    import mathsolve
    record = mathsolve.solve("What is 2 + 3?", model="qwen2.5-math-1.5b")
    record["answer"]

    with mathsolve.Solver(model="tora-7b") as solver:   # load once, solve many
        for q in questions:
            print(solver.solve(q)["answer"])

A record is a plain dict with the stable schema documented in the README
(`schema: "mathsolve.solution/1"`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable

from mathsolve import __version__
from mathsolve.core.loop import Events, run_loop
from mathsolve.core.models import ResolvedModel, card_for_served_model, resolve_model
from mathsolve.errors import ModelFileError, UsageError

if TYPE_CHECKING:
    from mathsolve.hub import DownloadProgress

SCHEMA = "mathsolve.solution/1"
# Sampling for majority voting when a protocol publishes none (ToRA's paper reports
# greedy only): a common choice for math self-consistency.
DEFAULT_VOTE_SAMPLING = {"temperature": 0.7, "top_p": 0.95}


def sampling_for(settings, published: dict[str, float] | None, *, sample: int | None = None,
                 sampled: bool = False) -> Any:
    """The sampler settings of one solve. Sample k of a self-consistency run uses the
    protocol's `published` sampling values unless the user set their own, and seed + k
    (modulo llama.cpp's 32-bit seed), so every sample differs and the whole run is
    reproducible. `sampled`: the protocol's model is never run greedily (reasoning models
    loop when decoded greedily; their cards say so), so a single solve uses the published
    values too, as sample 0."""
    from mathsolve.engines.base import Sampling
    from mathsolve.settings import MAX_SEED

    s = settings
    sampling = Sampling(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p, seed=s.seed)
    if sample is None and not (sampled and published):
        return sampling
    sample = sample or 0
    for name, value in (published or DEFAULT_VOTE_SAMPLING).items():
        if s.values[name].source == "default":
            setattr(sampling, name, value)
    sampling.seed = (s.seed + sample) % (MAX_SEED + 1)
    return sampling


class Solver:
    """A loaded model plus everything needed to solve problems with it."""

    def __init__(
        self,
        model: str | None = None,
        *,
        protocol: str | None = None,
        settings=None,
        console=None,
        notify: Callable[[str], None] | None = None,
        engine=None,
        progress: DownloadProgress | None = None,
        sessions: int = 1,
        **overrides: Any,
    ) -> None:
        """`progress` follows the download of a model not yet cached; by default it is the
        terminal's download bar, drawn on `console` (stderr when None).

        `sessions`: how many solves the caller will run at once from its threads (the K
        samples of a vote times the problems in flight). Above one, the local llama.cpp
        engine decodes up to `parallel` of them together (mathsolve.core.parallel); one
        keeps today's engine, a session at a time. `self.parallel` says how many run at once."""
        from mathsolve import registry
        from mathsolve.settings import Settings

        settings = settings or Settings()
        if model is not None or protocol is not None or overrides:
            settings = settings.with_overrides(model=model, protocol=protocol, **overrides)
        self.settings = settings
        # Batches running problems in threads set a semaphore here: it bounds the code
        # blocks running at once (see mathsolve.core.batch).
        self.tool_slots: threading.Semaphore | None = None
        entry = None if engine is not None else self._engine_entry()
        self.remote = entry is not None and not entry.local
        if engine is not None:  # an injected engine (tests, replay): no model file
            self.model = ResolvedModel(path="", protocol=settings.protocol or "tora", context=None, name=settings.model)
        elif self.remote:  # a server holds the model: nothing to resolve here
            engine = self._load_remote(entry, notify)
        else:
            self.model = resolve_model(
                settings.model, protocol=settings.protocol, offline=settings.offline,
                progress=progress if progress is not None else _download_bar(console),
            )
        # --reasoning/--thinking checked before a model of many gigabytes loads.
        protocol = registry.protocol(self.model.protocol).configure(reasoning=settings.reasoning,
                                                                    thinking=settings.thinking)
        self.engine = engine if engine is not None else self._load_engine(entry, notify, protocol, sessions)
        try:
            self.protocol = self._bind(protocol)
            self._check_markers()
        except BaseException:
            self.engine.close()
            raise
        self.tools = registry.tools()
        self._plan_sessions(sessions)

    def _plan_sessions(self, sessions: int) -> None:
        """How many solves run at once: a batched engine's slots; for an engine that serves
        parallel sessions itself (a server), `parallel` of them through a gate; else one."""
        from mathsolve.core.parallel import SERVER_DEFAULT, tool_slots, wanted

        self._batched = _is_batched(self.engine)
        self._gate: threading.Semaphore | None = None
        if self._batched:
            self.parallel = self.engine.slots
        elif getattr(self.engine, "concurrent", False):
            self.parallel, _ = wanted(self.settings, max(1, sessions), default=SERVER_DEFAULT)
            if self.parallel < sessions:
                self._gate = threading.BoundedSemaphore(self.parallel)
        else:
            self.parallel = 1
        if self.parallel > 1:
            self.tool_slots = threading.BoundedSemaphore(tool_slots(self.parallel))

    def _bind(self, protocol):
        try:
            return protocol.bind(self.engine.info.model)
        except UsageError as exc:
            if not self.remote or self.engine.info.model.chat_template:
                raise
            # A served model: what is missing is the server's, not a GGUF's.
            raise UsageError(
                f"the {protocol.name} protocol needs the model's chat template, and the server at "
                f"{self.engine.info.details.get('base_url', '?')} does not expose it (llama.cpp's llama-server "
                "gives it at /props; vLLM and llama_cpp.server do not); use the model's own --protocol"
            ) from exc

    def _load_remote(self, entry, notify):
        """Connect to the server first (it names the model), then pick the protocol:
        --protocol, else the catalog entry the server's model id matches."""
        from mathsolve import registry

        s = self.settings
        if s.protocol is not None:
            registry.protocol(s.protocol)  # a typo fails before any connection
        model = s.model if s.values["model"].source != "default" else None
        engine = entry.factory(self._request(model=model, n_ctx=s.n_ctx, notify=notify))
        name = engine.info.model.name or model or ""
        card = card_for_served_model(name) if s.protocol is None else None
        if s.protocol is None and card is None:
            engine.close()
            names = ", ".join(sorted(registry.protocols()))
            raise UsageError(f"--protocol is required: the server's model {name!r} is not in the catalog (one of: {names})")
        self.model = ResolvedModel(
            path="",
            protocol=s.protocol or card.protocol,
            context=None,
            name=name,
        )
        return engine

    def _check_markers(self) -> None:
        """Refuse a model whose GGUF lacks the protocol's special tokens (a broken conversion)."""
        check = getattr(self.engine, "marker_problems", None)
        if not self.protocol.markers or check is None:
            return
        bad = check(self.protocol.markers)
        if bad:
            raise ModelFileError(
                f"{self.model.path or 'the model'} does not have {', '.join(bad)} as single special tokens, "
                f"which the {self.protocol.name} protocol needs: the GGUF conversion dropped the "
                "checkpoint's added tokens; convert it again from the original checkpoint"
            )

    def _engine_entry(self):
        from mathsolve import registry

        engines = registry.engines()
        entry = engines.get(self.settings.engine)
        if entry is None:
            raise UsageError(f"unknown engine {self.settings.engine!r}; installed: {', '.join(engines)}")
        return entry

    def _load_engine(self, entry, notify: Callable[[str], None] | None, protocol, sessions: int = 1):
        n_ctx = self.settings.n_ctx or self.model.context or protocol.context
        if self.settings.n_ctx is None and self.model.path:
            n_ctx = min(n_ctx, _trained_context(self.model.path) or n_ctx)
        if sessions > 1 and entry.name == "llama":  # several at once: decoded together
            from mathsolve.core.parallel import BASE_CONTEXT, local_sequences, open_batched
            from mathsolve.engines.llama import LlamaEngine

            slots, explicit = local_sequences(self.settings, sessions=sessions, model_path=self.model.path,
                                              n_ctx=n_ctx, notify=notify)
            if slots > 1:
                base = entry.factory(self._request(model=self.model.name, model_path=self.model.path,
                                                   n_ctx=min(BASE_CONTEXT, n_ctx), notify=notify))
                if isinstance(base, LlamaEngine):
                    return open_batched(base, slots=slots, n_ctx=n_ctx, explicit=explicit, notify=notify)
                base.close()  # a plugin's engine under the name: loaded as usual below
        return entry.factory(self._request(model=self.model.name, model_path=self.model.path, n_ctx=n_ctx,
                                           notify=notify))

    def _request(self, **fields: Any):
        """The engine request: the settings every engine may use, plus `fields`."""
        from mathsolve.engines.base import EngineRequest

        s = self.settings
        return EngineRequest(n_gpu_layers=s.n_gpu_layers, threads=s.threads, extra_buffers=s.extra_buffers,
                             flash_attn=s.flash_attn, kv_cache=s.kv_cache, base_url=s.base_url,
                             api_key_env=s.api_key_env, request_timeout=s.request_timeout, verbose=s.verbose,
                             **fields)

    def __enter__(self) -> Solver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()

    def sampling(self, *, sample: int | None = None) -> Any:
        """The sampler settings of one solve (see `sampling_for`)."""
        return sampling_for(self.settings, self.protocol.sampling, sample=sample, sampled=self.protocol.sampled)

    def solve(
        self, question: str, *, events: Events | None = None, reference: str | None = None, sampling: Any = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """One solve. `cancel`, set from another thread, ends it with status "cancelled"
        (mathsolve.core.loop.run_loop); without one, the `time_budget` setting, when set,
        cancels it after that many seconds (a caller passing `cancel` keeps the budget itself,
        as voting does for all of a problem's samples)."""
        from mathsolve.sandbox import Limits
        from mathsolve.tools import ToolRouter
        from mathsolve.core.parallel import held

        if not question or not question.strip():
            raise UsageError("the question is empty")
        s, protocol = self.settings, self.protocol
        sampling = sampling or self.sampling()
        timer = None
        if cancel is None and s.time_budget:
            cancel = threading.Event()
            timer = threading.Timer(s.time_budget, cancel.set)
            timer.daemon = True
            timer.start()
        timeout = s.tool_timeout or protocol.tool_timeout_s
        limits = Limits(timeout_s=timeout, memory_mb=s.tool_memory_mb)
        router = ToolRouter(self.tools, explicit=s.tool) if protocol.tool else None
        prompt = protocol.prompt(question)
        started = time.perf_counter()
        try:
            with held(self._gate, cancel):  # a server's sessions: at most `parallel` at once
                extra = {"cancel": cancel} if self._batched else {}
                session = self.engine.session(
                    prompt,
                    special=protocol.special_prompt,
                    render_special=protocol.render_special,
                    literal=question,
                    markers=protocol.markers,
                    **extra,
                )
                try:
                    result = run_loop(
                        prompt=prompt,
                        protocol=protocol,
                        session=session,
                        router=router,
                        sampling=sampling,
                        limits=limits,
                        max_rounds=s.max_rounds,
                        max_new_tokens=s.max_tokens,
                        events=events,
                        tool_slots=self.tool_slots,
                        cancel=cancel,
                    )
                finally:
                    session.close()
        finally:
            if timer is not None:
                timer.cancel()
        return self._record(question, result, session.stats, sampling, time.perf_counter() - started, reference)

    def cancelled(self, question: str, *, sampling: Any = None) -> dict[str, Any]:
        """The record of a solve cancelled before it started (a sample the vote no longer
        needs): status "cancelled", no rounds, no tokens, the engine untouched."""
        from mathsolve.core.loop import LoopResult, Segment
        from mathsolve.engines.base import TokenStats

        result = LoopResult(status="cancelled", segments=[Segment("prompt", self.protocol.prompt(question))])
        return self._record(question, result, TokenStats(), sampling or self.sampling(), 0.0, None)

    def _record(self, question: str, result, stats, sampling, total: float, reference: str | None) -> dict[str, Any]:
        from mathsolve.scoring.answer import extract_answer

        s, protocol = self.settings, self.protocol
        answer = extract_answer(protocol.answer_text(result.solution), protocol.answer_style)
        if protocol.truncated_is_wrong and result.status == "length":
            answer = None  # the reference scores a solution cut off by the token limit as wrong
        if result.status in ("interrupted", "cancelled"):
            answer = None  # whatever the partial text ends with (a tool output, say) is no answer
        details = dict(getattr(self.engine.info, "details", {}))
        record: dict[str, Any] = {
            "schema": SCHEMA,
            "question": question,
            "answer": answer,
            "status": result.status,
            "model": {
                "name": self.model.name,
                "file": self.model.path or None,
                "quant": self.model.quant,
                "repo": self.model.repo,
            },
            "protocol": protocol.name,
            "transcript": [asdict(seg) for seg in result.segments],
            "tool_calls": result.tool_calls_dicts(),
            "rounds": result.rounds,
            "tokens": stats.to_dict(),
            "timings": {
                "load_s": details.get("load_s"),
                "first_token_s": _round(result.first_token_s),
                "generation_s": _round(result.generation_s),
                "tool_s": _round(result.tool_s),
                "total_s": _round(total),
                "tokens_per_s": _round(stats.generated / result.generation_s if result.generation_s else 0.0),
            },
            "sampling": asdict(sampling),
            "engine": {"name": self.engine.info.name, **details},
            "mathsolve_version": __version__,
        }
        if reference is not None:
            from mathsolve.scoring.graders import effective_grader, open_grader

            record["reference"] = reference
            if not answer:
                record["correct"] = False
            else:  # the grader --grader names (auto: the protocol's), as a batch would grade it
                with open_grader(effective_grader(s.grader, protocol)) as grader:
                    record["correct"] = grader.equal(answer, reference)
        return record


def _is_batched(engine) -> bool:
    """Whether `engine` is the batched llama.cpp engine (its sessions take a `cancel` event).
    Imported only for engines from that package: a server engine never loads llama.cpp."""
    if not type(engine).__module__.startswith("mathsolve.engines.llama"):
        return False
    from mathsolve.engines.llama.batched import BatchedEngine

    return isinstance(engine, BatchedEngine)


def _trained_context(path: str) -> int | None:
    """The context a GGUF was trained with: the default context never exceeds it (a
    protocol's 40,960 tokens is for the models that have them, not for any file run
    with it); an unreadable file fails later, when the engine loads it."""
    from mathsolve.ggufinfo import read_gguf

    try:
        value = read_gguf(path).context_length()
    except Exception:  # noqa: BLE001 - the engine reports a bad file with its own message
        return None
    return value if isinstance(value, int) and value > 0 else None


def _download_bar(console) -> DownloadProgress:
    """The bar a Solver shows while it downloads its model on first use, as `mathsolve pull` does.

    This module is the Python API, a front end like the command line: a program calling
    `mathsolve.solve()` sees the same bar on stderr as a terminal user (pass `progress=` to
    draw it otherwise, or `hub.SilentProgress()` for none)."""
    from mathsolve.cli.views.progress import RichDownloadProgress

    return RichDownloadProgress(console)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def solve(question: str, model: str | None = None, **overrides: Any) -> dict[str, Any]:
    """Solve one question; returns the same record as `mathsolve --json`."""
    with Solver(model, **overrides) as solver:
        return solver.solve(question)
