"""The `openai` engine against real servers: llama-cpp-python's `llama_cpp.server` on the tiny
GGUF (streaming, concurrent batches, a server killed mid-batch, wrong model, no server), and a
small local stand-in speaking the OpenAI completions protocol for what a tiny random model
cannot do on cue (slow answers, HTTP errors, vLLM's stop_reason, code rounds, /props)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mathsolve.api import Solver
from mathsolve.core.batch import read_records
from mathsolve.cli import app
from mathsolve.engines.base import Sampling
from mathsolve.engines.openai import OpenAIEngine
from mathsolve.engines.openai import transport as openai_transport
from mathsolve.engines.openai.completions import CHARS_PER_TOKEN
from mathsolve.errors import EngineError
from mathsolve.core.loop import NoEvents

runner = CliRunner()
TORA = ("--protocol", "tora")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_transport, "RETRIES", 2)
    monkeypatch.setattr(openai_transport, "BACKOFF_S", 0.01)


# -- a real llama_cpp.server ------------------------------------------------------------

class LlamaServer:
    """`python -m llama_cpp.server` on a GGUF, serving it as model `tiny`."""

    def __init__(self, model: Path, log: Path, port: int | None = None) -> None:
        self.model, self.log, self.port = model, log, port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, deadline_s: float = 60.0) -> LlamaServer:
        args = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", "tiny",
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048", "--interrupt_requests", "False"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("llama_cpp.server did not become ready in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def server(tiny_bpe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    srv = LlamaServer(tiny_bpe, tmp_path_factory.mktemp("server") / "server.log").start()
    yield srv
    srv.stop()


def remote(url: str, *args: str) -> list[str]:
    return ["--engine", "openai", "--base-url", url, *args]


class Chunks(NoEvents):
    """Events sink that keeps the streamed pieces."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    def on_text(self, text: str) -> None:
        self.pieces.append(text)


def test_a_single_solve_streams_and_matches_the_local_engine(server: LlamaServer, tiny_bpe: Path) -> None:
    events = Chunks()
    with remote_solver(server.url, model="tiny", protocol="tora", max_tokens=40, max_rounds=1) as solver:
        record = solver.solve("What is 1+1?", events=events)
    with Solver(model=str(tiny_bpe), protocol="tora", max_tokens=40, max_rounds=1) as local:
        expected = local.solve("What is 1+1?")
    text = record["transcript"][1]["text"]
    assert len(events.pieces) > 5 and "".join(events.pieces) == text  # streamed, piece by piece
    assert text == expected["transcript"][1]["text"]  # the same greedy text as llama.cpp in-process
    assert record["engine"]["name"] == "openai" and record["engine"]["base_url"] == server.url
    assert record["model"] == {"name": "tiny", "file": None, "quant": None, "repo": None}
    assert record["tokens"]["generated"] == expected["tokens"]["generated"]


def remote_solver(url: str, **flags: Any) -> Solver:
    from mathsolve.settings import Settings

    return Solver(settings=Settings(dict(engine="openai", base_url=url, **flags)))


def test_a_concurrent_batch_writes_the_same_records_as_a_sequential_one(server: LlamaServer, tmp_path: Path) -> None:
    problems = tmp_path / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": i, "question": f"What is {i} times {i + 1}?", "answer": str(i * (i + 1))})
                                + "\n" for i in range(8)))
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"c{n}.jsonl"
        r = runner.invoke(app, ["eval", str(problems), *remote(server.url, "--model", "tiny", *TORA), "--max-tokens", "48",
                                "--concurrency", str(n), "-o", str(out), "--json"])
        assert r.exit_code == 0, r.output
        lines = out.read_text().splitlines()
        assert len(lines) == len({json.loads(line)["id"] for line in lines}) == 8
        runs[n] = read_records(out)
    keys = ("answer", "status", "transcript", "rounds", "tokens", "correct")
    assert {i: [r[k] for k in keys] for i, r in runs[1].items()} == {i: [r[k] for k in keys] for i, r in runs[2].items()}


def test_a_server_killed_mid_batch_fails_clearly_and_the_rerun_resumes(tiny_bpe: Path, tmp_path: Path) -> None:
    srv = LlamaServer(tiny_bpe, tmp_path / "server.log").start()
    try:
        questions = [f"Problem number {i}: what is {i} plus {i}?" for i in range(80)]
        problems = tmp_path / "problems.txt"
        problems.write_text("\n".join(questions) + "\n")
        out = tmp_path / "out.jsonl"
        args = [sys.executable, "-m", "mathsolve", str(problems), *remote(srv.url, "--model", "tiny", *TORA),
                "--max-tokens", "96", "--concurrency", "2", "-o", str(out)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
            time.sleep(0.01)
        srv.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        first = read_records(out)
        assert proc.returncode == 6, err
        assert 3 <= len(first) < 80, "the server should have died in the middle of the batch"
        error_lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and "connection refused" in error_lines[0] and srv.url in error_lines[0]
        assert "Traceback" not in err
        srv.start()
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = out.read_text().splitlines()
        ids = [json.loads(line)["id"] for line in lines]
        assert len(ids) == len(set(ids)) == 80 and "already done" in done.stderr
        assert all(json.loads(line) == first[json.loads(line)["id"]] for line in lines[: len(first)])
    finally:
        srv.stop()


def test_a_wrong_model_name_lists_the_served_models(server: LlamaServer) -> None:
    r = runner.invoke(app, remote(server.url, "--model", "tora-7b", *TORA, "Q?"))
    assert r.exit_code == 6
    assert f"error: the server at {server.url} does not serve model 'tora-7b'; it serves: tiny" in r.output
    r = runner.invoke(app, remote(server.url, *TORA, "Q?"))  # no --model: which one?
    assert r.exit_code == 2 and "--model is required with --engine openai" in r.output and "serves tiny" in r.output


def test_an_unreachable_server_is_one_clear_line() -> None:
    port = free_port()
    r = runner.invoke(app, remote(f"http://127.0.0.1:{port}", "--model", "m", *TORA, "Q?"))
    assert r.exit_code == 6
    assert r.output.strip() == (f"error: cannot reach the server at http://127.0.0.1:{port}/v1: connection refused "
                                "(is it running? check --base-url)")


def test_chat_tir_needs_a_template_the_server_does_not_expose(server: LlamaServer) -> None:
    r = runner.invoke(app, remote(server.url, "--model", "tiny", "--protocol", "chat-tir", "Q?"))
    assert r.exit_code == 2 and "does not expose it" in r.output and "/props" in r.output


def test_the_local_engine_with_parallel_1_keeps_concurrency_at_one(tiny_bpe: Path, tmp_path: Path) -> None:
    """The local engine keeps problems in flight on its batched engine (tests/test_parallel_llama.py);
    with one sequence at a time it says it runs them one by one."""
    r = runner.invoke(app, ["--model", str(tiny_bpe), *TORA, "--max-tokens", "4", "--concurrency", "3", "--parallel", "1",
                            "--jsonl", "-"], input="First?\nSecond?\n")
    assert r.exit_code == 0, r.output
    assert "concurrency 3 -> 1" in r.output and len([x for x in r.stdout.splitlines() if x.startswith("{")]) == 2


# -- a stand-in OpenAI server ------------------------------------------------------------

# (HTTP status, JSON payload or a list of SSE chunks or a function writing the whole answer
# itself, delay in seconds)
Reply = tuple[int, Any, float]
Write = Callable[[BaseHTTPRequestHandler], None]


class StandIn:
    """A local HTTP server speaking enough of the OpenAI completions API; `respond(body)`
    decides each /v1/completions answer, `get` (when given) writes every GET answer itself.
    Every completion request body is kept."""

    def __init__(self, respond: Callable[[dict[str, Any]], Reply], models: tuple[str, ...] = ("fake",),
                 props: dict[str, Any] | None = None, get: Write | None = None) -> None:
        self.respond, self.models, self.props, self.get = respond, models, props, get
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []  # the Authorization header of every request
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                stand_in.auth.append(self.headers.get("Authorization"))
                if stand_in.get is not None:
                    stand_in.get(self)
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in stand_in.models]})
                elif self.path == "/props" and stand_in.props is not None:
                    self._send(200, stand_in.props)
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                stand_in.auth.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.bodies.append(body)
                status, payload, delay = stand_in.respond(body)
                time.sleep(delay)
                if callable(payload):
                    payload(self)
                    return
                if not isinstance(payload, list):
                    self._send(status, payload)
                    return
                self.send_response(status)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for chunk in payload:
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (the time-out test) is not an error here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stand_in() -> Iterator[Callable[..., StandIn]]:
    made: list[StandIn] = []

    def make(respond: Callable[[dict[str, Any]], Reply], **kw: Any) -> StandIn:
        made.append(StandIn(respond, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def completion(text: str, finish: str | None = "stop", usage: tuple[int, int] | None = (10, 3), **extra: Any) -> dict:
    reply: dict[str, Any] = {"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish, **extra}]}
    if usage:
        reply["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return reply


def generate(engine: OpenAIEngine, stops: tuple[str, ...] = ("```output", "</s>"), max_tokens: int = 64, **kw: Any):
    return engine.session("prompt: ").generate(stops=stops, max_tokens=max_tokens, sampling=Sampling(), **kw)


def test_stop_and_eos_are_told_apart(stand_in) -> None:
    answers = iter([
        completion("code\n```", stop_reason="```output"),  # vLLM: the stop string
        completion("done", stop_reason=None),  # vLLM: EOS
        completion("kept```output and more"),  # a server that keeps the stop string
        completion("x", finish="length"),
        completion("ambiguous"), completion("```output\n", finish="length"),  # probe: a stop follows
        completion("ambiguous"), completion("", finish="stop"),  # probe: EOS follows
    ])
    srv = stand_in(lambda body: (200, next(answers), 0))
    engine = OpenAIEngine(base_url=srv.url, model="fake", stream=False)
    got = [generate(engine) for _ in range(6)]
    assert [(g.text, g.finish_reason, g.stop) for g in got] == [
        ("code\n```", "stop", "```output"), ("done", "eos", None), ("kept", "stop", "```output"),
        ("x", "length", None), ("ambiguous", "stop", "```output"), ("ambiguous", "eos", None)]
    probe = srv.bodies[5]
    assert probe["prompt"] == "prompt: ambiguous" and "stop" not in probe and probe["temperature"] == 0.0
    assert engine.probes == 2
    first = srv.bodies[0]  # sampling is mapped explicitly
    assert {k: first[k] for k in ("model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
                                  "repetition_penalty", "repeat_penalty", "stop")} == {
        "model": "fake", "prompt": "prompt: ", "max_tokens": 64, "temperature": 0.0, "top_p": 1.0, "top_k": 0,
        "min_p": 0.0, "seed": 0, "repetition_penalty": 1.0, "repeat_penalty": 1.0, "stop": ["```output", "</s>"]}


def test_a_stream_is_shown_without_a_kept_stop_string(stand_in) -> None:
    chunks = [{"choices": [{"text": piece, "finish_reason": None}]} for piece in ("ab", "c```out", "put tail")]
    chunks.append({"choices": [{"text": "", "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
    srv = stand_in(lambda body: (200, chunks, 0))
    engine = OpenAIEngine(base_url=srv.url, model="fake")
    shown: list[str] = []
    gen = generate(engine, on_text=shown.append)
    assert (gen.text, gen.stop, gen.n_tokens) == ("abc", "```output", 4) and "".join(shown) == "abc"
    assert srv.bodies[0]["stream"] is True and srv.bodies[0]["stream_options"] == {"include_usage": True}


def test_transient_errors_are_retried_and_client_errors_are_not(stand_in, fast_retries) -> None:
    answers = iter([(503, {"error": {"message": "loading"}}, 0), (429, {"message": "slow down"}, 0),
                    (200, completion("ok", stop_reason=None), 0)])
    srv = stand_in(lambda body: next(answers))
    assert generate(OpenAIEngine(base_url=srv.url, model="fake", stream=False)).text == "ok"
    assert len(srv.bodies) == 3
    srv = stand_in(lambda body: (500, {"error": {"message": "boom"}}, 0))
    with pytest.raises(EngineError, match=r"generation at .* failed: HTTP 500: boom \(tried 3 times\)"):
        generate(OpenAIEngine(base_url=srv.url, model="fake", stream=False))
    assert len(srv.bodies) == 3
    srv = stand_in(lambda body: (400, {"object": "error", "message": "best_of must be 1", "type": "BadRequestError"}, 0))
    with pytest.raises(EngineError, match="answered HTTP 400 to /v1/completions: best_of must be 1"):
        generate(OpenAIEngine(base_url=srv.url, model="fake", stream=False))
    assert len(srv.bodies) == 1


def test_a_slow_server_hits_the_request_timeout(stand_in, fast_retries) -> None:
    srv = stand_in(lambda body: (200, completion("late"), 3.0))
    r = runner.invoke(app, remote(srv.url, "--model", "fake", *TORA, "--request-timeout", "0.3", "Q?"))
    assert r.exit_code == 6
    assert f"error: generation at {srv.url} failed: no answer within 0.3 s (--request-timeout) (tried 3 times)" in r.output
    assert len(srv.bodies) == 3


def test_a_full_context_shrinks_max_tokens_then_ends_the_solution(stand_in) -> None:
    full = ("This model's maximum context length is 2048 tokens, however you requested 2500 tokens "
            "(1900 in your prompt; 600 for the completion).")
    answers = iter([(400, {"error": {"message": full, "code": "context_length_exceeded"}}, 0),
                    (200, completion("fits", finish="length"), 0),
                    (400, {"message": "This model's maximum context length is 2048 tokens. However, you requested "
                                      "2600 tokens (2048 in the messages, 552 in the completion).", "code": 400}, 0)])
    srv = stand_in(lambda body: next(answers))
    engine = OpenAIEngine(base_url=srv.url, model="fake", stream=False)
    assert (generate(engine, max_tokens=600).text, srv.bodies[1]["max_tokens"]) == ("fits", 148)
    gen = generate(engine, max_tokens=552)
    assert (gen.text, gen.finish_reason, gen.n_tokens) == ("", "length", 0)


def _tool_rounds(body: dict[str, Any]) -> Reply:
    """ToRA-style: a code block that prints when it started and ended, then an answer."""
    if "```output" in body["prompt"]:
        return 200, completion("The answer is \\boxed{2}.", stop_reason=None), 0
    code = "```python\nimport time\nprint(time.time())\ntime.sleep(0.6)\nprint(time.time())\n```"
    return 200, completion(code, stop_reason="```output"), 0


def test_concurrent_problems_overlap_their_code_within_the_tool_slots(stand_in, tmp_path: Path) -> None:
    from mathsolve.core.runs import tool_slots

    srv = stand_in(_tool_rounds, models=("llm-agents/tora-7b-v1.0",))
    problems = tmp_path / "p.txt"
    problems.write_text("".join(f"Problem {i}?\n" for i in range(4)))
    out = tmp_path / "out.jsonl"
    r = runner.invoke(app, [str(problems), *remote(srv.url, "--model", "llm-agents/tora-7b-v1.0"),  # protocol from the catalog
                            "--concurrency", "4", "-o", str(out)])
    assert r.exit_code == 0, r.output
    records = list(read_records(out).values())
    assert len(records) == 4 and {rec["answer"] for rec in records} == {"2"}
    assert {rec["protocol"] for rec in records} == {"tora"} and all(rec["timings"]["tool_s"] >= 0.6 for rec in records)
    spans = [tuple(map(float, call["stdout"].split())) for rec in records for call in rec["tool_calls"]]
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert min(2, tool_slots(4)) <= peak <= tool_slots(4)


def test_chat_tir_uses_the_template_from_llama_server_props(stand_in) -> None:
    template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}<assistant>"
    srv = stand_in(lambda body: (200, completion("\\boxed{4}", stop_reason=None), 0), props={"chat_template": template})
    with remote_solver(srv.url, model="fake", protocol="chat-tir") as solver:
        record = solver.solve("2+2?")
    assert record["answer"] == "4" and srv.bodies[0]["prompt"].startswith("<system>Solve the math problem")
    assert srv.bodies[0]["prompt"].endswith("<user>2+2?\n<assistant>")


def test_eval_names_its_file_after_the_served_model_and_finds_the_published_score(stand_in, tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    srv = stand_in(lambda body: (200, completion("\\boxed{18}", stop_reason=None), 0), models=("llm-agents/tora-7b-v1.0",))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["eval", "gsm8k", "--limit", "2", *remote(srv.url, "--model", "llm-agents/tora-7b-v1.0"),
                            "--concurrency", "2", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout[r.stdout.index("{"):])
    assert report["output"] == "gsm8k.llm-agents-tora-7b-v1.0.jsonl" and report["published"] == 68.8
    assert report["correct"] == 1 and os.path.exists(report["output"])


def test_the_api_key_comes_from_the_named_environment_variable(stand_in, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = stand_in(lambda body: (200, completion("\\boxed{1}", stop_reason=None), 0))
    args = remote(srv.url, "--model", "fake", *TORA, "--api-key-env", "MY_SERVER_KEY", "--json", "Q?")
    monkeypatch.delenv("MY_SERVER_KEY", raising=False)
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "the environment variable MY_SERVER_KEY is not set" in r.output and not srv.auth
    monkeypatch.setenv("MY_SERVER_KEY", "s3cret")
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert set(srv.auth) == {"Bearer s3cret"} and "s3cret" not in r.stdout  # sent, never recorded


# -- a hostile server: runaway, silent, slow, oversized or malformed answers ----------------

def head(handler: BaseHTTPRequestHandler, content_type: str = "text/event-stream", length: int | None = None) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def event(text: str, finish: str | None = None) -> bytes:
    return f"data: {json.dumps({'choices': [{'index': 0, 'text': text, 'finish_reason': finish}]})}\n\n".encode()


def runaway(*pieces: str, pause: float = 0.0) -> Write:
    """A stream of text that never ends (until the client hangs up, or 20 s)."""
    def write(handler: BaseHTTPRequestHandler) -> None:
        head(handler)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            for piece in pieces:
                handler.wfile.write(event(piece))
            time.sleep(pause)
    return write


def pings(*first: bytes, every: float = 0.1) -> Write:
    """A stream that sends `first`, then only keep-alive comments (until the client hangs up, or 20 s)."""
    def write(handler: BaseHTTPRequestHandler) -> None:
        head(handler)
        for data in first:
            handler.wfile.write(data)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            handler.wfile.write(b": ping\n\n")
            time.sleep(every)
    return write


def drip(data: bytes, every: float = 0.05, length: int | None = None) -> Write:
    """A JSON answer sent a byte at a time; `length` may promise more than is ever sent."""
    def write(handler: BaseHTTPRequestHandler) -> None:
        head(handler, "application/json", len(data) if length is None else length)
        for byte in data:
            handler.wfile.write(bytes([byte]))
            time.sleep(every)
        time.sleep(20 if length else 0)
    return write


def body(data: bytes, length: int | None = None, forever: bool = False) -> Write:
    """A JSON answer of these bytes, or these bytes over and over (until the client hangs up, or 20 s)."""
    def write(handler: BaseHTTPRequestHandler) -> None:
        head(handler, "application/json", length)
        end = time.monotonic() + 20
        handler.wfile.write(data)
        while forever and time.monotonic() < end:
            handler.wfile.write(data)
    return write


def test_a_runaway_stream_is_cut_at_max_tokens(stand_in) -> None:
    srv = stand_in(lambda body: (200, runaway("ab", "cd", "```out", "put"), 0))
    engine = OpenAIEngine(base_url=srv.url, model="fake")
    shown: list[str] = []
    started = time.monotonic()
    gen = generate(engine, stops=("</s>",), max_tokens=50, on_text=shown.append)
    assert time.monotonic() - started < 2
    assert (gen.finish_reason, gen.stop, gen.n_tokens) == ("length", None, 50)  # 50 pieces, no more
    assert gen.text == "abcd```output" * 12 + "abcd" and "".join(shown) == gen.text
    shown.clear()  # the server keeps a stop string it says nothing of and runs on: the stop ends the text
    gen = generate(engine, max_tokens=50, on_text=shown.append)
    assert (gen.text, gen.finish_reason, gen.stop, "".join(shown)) == ("abcd", "stop", "```output", "abcd")
    shown.clear()  # cut inside a stop string: held back while streaming, shown at the end
    gen = generate(engine, max_tokens=3, on_text=shown.append)
    assert (gen.text, gen.finish_reason, "".join(shown)) == ("abcd```out", "length", "abcd```out")



def test_a_stream_that_ends_in_time_is_not_cut(stand_in) -> None:
    held = [{"choices": [{"text": t, "finish_reason": None}]} for t in ("a", "b", "c")]
    held.append({"choices": [{"text": "d", "finish_reason": "stop", "stop_reason": None}]})  # held-back text, at the end
    srv = stand_in(lambda body: (200, held, 0))
    gen = generate(OpenAIEngine(base_url=srv.url, model="fake"), max_tokens=3, on_text=lambda text: None)
    assert (gen.text, gen.finish_reason) == ("abcd", "eos")
    srv = stand_in(lambda body: (200, pings(event("done", "stop")), 0))  # finished, but never closed
    engine = OpenAIEngine(base_url=srv.url, model="fake", request_timeout=0.5)
    started = time.monotonic()
    assert generate(engine, stops=(), on_text=lambda text: None).text == "done"
    assert 0.5 <= time.monotonic() - started < 1.5


def test_the_cli_ends_a_runaway_generation_with_status_length(stand_in) -> None:
    srv = stand_in(lambda body: (200, runaway("x = 1\n"), 0))
    started = time.monotonic()
    r = runner.invoke(app, remote(srv.url, "--model", "fake", *TORA, "--max-tokens", "50", "--max-rounds", "1",
                                  "--json", "q"))
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout[r.stdout.index("{"):])
    assert record["status"] == "length" and record["tokens"]["generated"] == 50
    assert record["transcript"][1]["text"].split() == "x = 1".split() * 50 and time.monotonic() - started < 5


def test_very_long_pieces_are_cut_at_the_character_bound(stand_in) -> None:
    srv = stand_in(lambda body: (200, runaway("y" * 1000), 0))
    shown: list[str] = []
    gen = generate(OpenAIEngine(base_url=srv.url, model="fake"), max_tokens=4, on_text=shown.append)
    bound = 4 * CHARS_PER_TOKEN
    assert (gen.text, gen.finish_reason, "".join(shown)) == ("y" * bound, "length", "y" * bound)
    srv = stand_in(lambda body: (200, completion("z" * 1000), 0))  # a whole answer, too long for max_tokens
    gen = generate(OpenAIEngine(base_url=srv.url, model="fake", stream=False), max_tokens=4)
    assert (gen.text, gen.finish_reason) == ("z" * bound, "length")


def test_a_stream_of_keep_alive_comments_hits_the_request_timeout(stand_in, fast_retries) -> None:
    role_only = b'data: {"choices": [{"index": 0, "text": "", "finish_reason": null}]}\n\n'
    srv = stand_in(lambda body: (200, pings(role_only), 0))
    engine = OpenAIEngine(base_url=srv.url, model="fake", request_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"^generation at .* failed: no answer within 0.5 s \(--request-timeout\) "
                                          r"\(tried 3 times\)$"):
        generate(engine, on_text=lambda text: None)
    assert 1.5 <= time.monotonic() - started < 3 and len(srv.bodies) == 3
    srv = stand_in(lambda body: (200, pings(event("shown")), 0))  # text was shown: not retried
    engine = OpenAIEngine(base_url=srv.url, model="fake", request_timeout=0.5)
    with pytest.raises(EngineError, match=r"broke off mid-answer: no answer within 0.5 s \(--request-timeout\)$"):
        generate(engine, on_text=lambda text: None)
    assert len(srv.bodies) == 1


def test_a_whole_answer_must_arrive_within_the_request_timeout(stand_in, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_transport, "RETRIES", 0)  # retries are the keep-alive test's
    answer = json.dumps(completion("late")).encode()
    srv = stand_in(lambda body: (200, drip(answer), 0))  # each byte in time, the whole far too late
    engine = OpenAIEngine(base_url=srv.url, model="fake", stream=False, request_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"failed: no answer within 0.5 s \(--request-timeout\)$"):
        generate(engine)
    assert time.monotonic() - started < 1
    srv = stand_in(lambda body: (200, drip(answer[:20], every=0.01, length=len(answer)), 0))  # never finished
    engine = OpenAIEngine(base_url=srv.url, model="fake", stream=False, request_timeout=0.5)
    with pytest.raises(EngineError, match=r"failed: no answer within 0.5 s \(--request-timeout\)$"):
        generate(engine)
    srv = stand_in(lambda body: (200, drip(answer, every=0.2), 0))  # a streamed request answered slowly as JSON
    engine = OpenAIEngine(base_url=srv.url, model="fake", request_timeout=0.5)
    with pytest.raises(EngineError, match=r"failed: no answer within 0.5 s \(--request-timeout\)$"):
        generate(engine, on_text=lambda text: None)


def test_an_oversized_answer_is_refused(stand_in, fast_retries) -> None:
    limit = 64 * CHARS_PER_TOKEN * 2 + (1 << 20)
    for write in (body(b" " * (2 << 20), length=2 << 20), body(b'{"choices": ["' + b"w" * 65536, forever=True)):
        srv = stand_in(lambda _, write=write: (200, write, 0))
        engine = OpenAIEngine(base_url=srv.url, model="fake", stream=False)
        started = time.monotonic()
        with pytest.raises(EngineError, match=f"^the server at {srv.url} sent an answer larger than {limit:,} bytes$"):
            generate(engine, max_tokens=64)
        assert time.monotonic() - started < 2 and len(srv.bodies) == 1  # not retried
    srv = stand_in(lambda _: (200, runaway("v" * (2 << 20)), 0))
    with pytest.raises(EngineError, match="malformed answer: a line of the stream is longer than 1 MiB$"):
        generate(OpenAIEngine(base_url=srv.url, model="fake"), on_text=lambda text: None)


def test_a_malformed_answer_is_one_line(stand_in) -> None:
    deep, digits = b"[" * 100_000, b'{"choices": [{"text": "x", "finish_reason": "stop"}], "usage": ' + b"7" * 5000 + b"}"
    for write in (body(deep, length=len(deep)), body(digits, length=len(digits)),
                  pings(b"data: " + deep + b"\n\n"), pings(b"data: [1, 2]\n\n"),
                  pings(b'data: {"choices": [{"text": 5}]}\n\n')):
        srv = stand_in(lambda _, write=write: (200, write, 0))
        with pytest.raises(EngineError, match=f"^the server at {srv.url} sent a malformed answer: ") as caught:
            generate(OpenAIEngine(base_url=srv.url, model="fake", request_timeout=5), on_text=lambda text: None)
        assert "\n" not in caught.value.message and len(caught.value.message) < 400
    srv = stand_in(lambda _: (200, completion("x"), 0), get=body(deep, length=len(deep)))  # /models too
    r = runner.invoke(app, remote(srv.url, "--model", "fake", *TORA, "Q?"))
    assert r.exit_code == 6 and "Traceback" not in r.output
    assert r.output.strip() == (f"error: {srv.url}/models did not answer JSON: is --base-url an OpenAI-compatible "
                                "server?")
