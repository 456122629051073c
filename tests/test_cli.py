"""The CLI through Typer's runner (and a real subprocess for `python -m`): outputs and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathsolve.cli import app
from mathsolve.errors import EXIT_BAD_MODEL_FILE, EXIT_DOWNLOAD, EXIT_UNKNOWN_MODEL, EXIT_USAGE

runner = CliRunner()
QUESTION = "Janet's ducks lay 16 eggs per day. How many eggs in two days?"


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_json_output_holds_the_whole_record(tiny_bpe: Path) -> None:
    r = run("--model", str(tiny_bpe), "--protocol", "qwen-tir", "--max-tokens", "12", "--json", QUESTION)
    assert r.exit_code == 0, r.output
    record = json.loads(r.stdout)
    assert {"answer", "transcript", "tool_calls", "tokens", "timings", "model", "protocol"} <= set(record)
    assert record["protocol"] == "qwen-tir" and record["question"] == QUESTION
    assert record["transcript"][0]["text"].startswith("<|im_start|>system\n")
    assert record["tokens"]["generated"] == 12
    assert record["engine"]["name"] == "llama.cpp"


def test_plain_output_when_piped(tiny_bpe: Path) -> None:
    r = run("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "8", QUESTION)
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().splitlines()[-1].startswith("Answer:")


def test_question_from_stdin(tiny_bpe: Path) -> None:
    r = run("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "--json", "-", input=QUESTION + "\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["question"].strip() == QUESTION


def test_same_question_twice_gives_the_same_answer_greedy(tiny_bpe: Path) -> None:
    outs = [json.loads(run("--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "16", "--json", QUESTION).stdout)
            for _ in range(2)]
    assert outs[0]["transcript"] == outs[1]["transcript"]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--model", "tora-7", "q"], EXIT_UNKNOWN_MODEL, "did you mean tora-7b"),
        (["--model", "tora-7b:Q9_Z", "q"], EXIT_UNKNOWN_MODEL, "available: Q4_K_M"),
        (["--model", "missing/model.gguf", "--protocol", "tora", "q"], EXIT_BAD_MODEL_FILE, "not found"),
        (["--model", "tora-7b", "--offline", "q"], EXIT_DOWNLOAD, "--model PATH.gguf"),
        (["--protocol", "nope", "--model", "tora-7b", "q"], EXIT_USAGE, "unknown protocol"),
        (["   "], EXIT_USAGE, "empty"),
        (["--kv-cache", "q9", "--model", "tora-7b", "q"], EXIT_USAGE, "kv_cache"),
        (["--flash-attn", "maybe", "--model", "tora-7b", "q"], EXIT_USAGE, "flash_attn"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(args, code, message) -> None:
    r = run(*args)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in r.output


def test_quantized_kv_cache_without_flash_attention_is_a_usage_error(tiny_bpe: Path) -> None:
    r = run("--model", str(tiny_bpe), "--protocol", "tora", "--kv-cache", "q8_0", "--flash-attn", "off", "q")
    assert r.exit_code == EXIT_USAGE, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs flash attention" in lines[0]


def test_not_a_gguf_file(tmp_path: Path) -> None:
    fake = tmp_path / "x.gguf"
    fake.write_text("hello")
    r = run("--model", str(fake), "--protocol", "tora", "q")
    assert r.exit_code == EXIT_BAD_MODEL_FILE and "not a GGUF" in r.stderr


def test_path_without_protocol_asks_for_one(tiny_bpe: Path) -> None:
    r = run("--model", str(tiny_bpe), "q")
    assert r.exit_code == EXIT_USAGE and "--protocol is required" in r.stderr


def test_no_network_names_the_url(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    r = run("--model", "tora-7b", "q")
    assert r.exit_code == EXIT_DOWNLOAD, r.output
    assert "tora-7b-v1.0.Q4_K_M.gguf" in r.stderr and "--model" in r.stderr


def test_models_lists_the_catalog() -> None:
    r = runner.invoke(app, ["models", "--json"])
    names = {row["name"] for row in json.loads(r.stdout)}
    assert {"tora-7b", "tora-code-7b", "tora-13b", "tora-code-13b", "tora-code-34b", "tora-70b"} <= names
    assert {"mumath-code-l-7b", "mumath-code-cl-7b", "qwen2.5-math-1.5b"} <= names
    r = runner.invoke(app, ["models", "--family", "tora", "--json"])
    assert {row["family"] for row in json.loads(r.stdout)} == {"tora"}


def test_models_show_explains_conversion_without_gguf() -> None:
    r = runner.invoke(app, ["models", "show", "mumath-code-l-70b"])
    assert r.exit_code == 0 and "convert_hf_to_gguf.py" in r.stdout


def test_config_shows_sources(monkeypatch, isolated_user: Path) -> None:
    (isolated_user / "config.toml").write_text('temperature = 0.5\nmodel = "tora-7b"\n')
    monkeypatch.setenv("MATHSOLVE_SEED", "7")
    r = runner.invoke(app, ["config"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.count("│") >= 4}
    assert "env MATHSOLVE_SEED" in rows["seed"] and "config" in rows["temperature"] and "default" in rows["top_p"]


def test_bad_config_is_a_usage_error(isolated_user: Path) -> None:
    (isolated_user / "config.toml").write_text("temperature = [")
    r = run("q")
    assert r.exit_code == EXIT_USAGE and "not valid TOML" in r.stderr


def test_doctor_reports_every_section() -> None:
    r = runner.invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for word in ("llama-cpp-python", "GPU offload", "threads", "cache", "plugins", "sandbox"):
        assert word in r.stdout


def test_python_dash_m_is_the_same_program() -> None:
    a = subprocess.run([sys.executable, "-m", "mathsolve", "--help"], capture_output=True, text=True)
    b = subprocess.run([str(Path(sys.executable).with_name("mathsolve")), "--help"], capture_output=True, text=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout and "pull" in a.stdout


def test_rich_renderer_shows_panels_for_code_and_output() -> None:
    from rich.console import Console

    from mathsolve.engines.scripted import ScriptedEngine
    from mathsolve.cli.render import RichRenderer
    from mathsolve.api import Solver
    from tests.test_loop import CODE_ROUND, EchoTool

    buf = StringIO()
    renderer = RichRenderer(Console(file=buf, force_terminal=True, width=80, color_system=None))
    solver = Solver(engine=ScriptedEngine([CODE_ROUND, "The answer is $\\boxed{5}$.</s>"]), protocol="tora", model="s")
    solver.tools = {"python": EchoTool()}
    record = solver.solve("What is 2 + 3?", events=renderer)
    renderer.on_finish(record)
    out = buf.getvalue()
    assert "Compute it." in out and "print(2 + 3)" in out and "╭─ python" in out
    assert "output · python · ok" in out and "╭─ answer" in out and "tok/s" in out
    assert "```" not in out  # fences become panels


def test_rich_renderer_prints_model_prose_literally_without_control_characters() -> None:
    from rich.console import Console

    from mathsolve.cli.render import RichRenderer

    buf = StringIO()
    renderer = RichRenderer(Console(file=buf, force_terminal=True, width=80))
    for chunk in ["Let x = 3 :smile: [bold]y[/bold]", "\x1b[2J\x1b]0;owned\x07 done\r", "\nnext line"]:
        renderer.on_text(chunk)
    renderer.on_round_end(0)
    out = buf.getvalue()
    assert "Let x = 3 :smile: [bold]y[/bold][2J]0;owned done\nnext line\n" == out
    assert "\x1b" not in out and "\x07" not in out


def test_rich_renderer_strips_control_characters_from_code_and_tool_output() -> None:
    from rich.console import Console

    from mathsolve.core.loop import ToolCall
    from mathsolve.cli.render import RichRenderer

    buf = StringIO()
    renderer = RichRenderer(Console(file=buf, force_terminal=True, width=80, color_system=None))
    for chunk in ["```python\n", "print('\x1b[2J')\n", "```\n"]:
        renderer.on_text(chunk)
    renderer.on_round_end(0)
    renderer.on_tool_end(ToolCall(index=0, round=0, tool="python", code="", observation="```output\n\x1b]0;x\x07hi\n```\n",
                                  status="ok"))
    out = buf.getvalue()
    assert "print('[2J')" in out and "]0;xhi" in out
    assert "\x1b]" not in out and "\x1b[2J" not in out and "\x07" not in out


def test_rich_renderer_shows_mathcoder_blocks_as_panels() -> None:
    from rich.console import Console

    from mathsolve.api import Solver
    from mathsolve.engines.scripted import ScriptedEngine
    from mathsolve.cli.render import RichRenderer

    buf = StringIO()
    renderer = RichRenderer(Console(file=buf, force_terminal=True, width=80, color_system=None))
    script = ["<|text|>Let me compute.<|endofblock|>", "<|code|>x = 2 + 3\nx<|endofblock|>", "<|text|>\\boxed{5}<|endofblock|>", "<|endofmessage|>"]
    record = Solver(engine=ScriptedEngine(script), protocol="mathcoder", model="s").solve("2+3?", events=renderer)
    renderer.on_finish(record)
    out = buf.getvalue()
    assert "Let me compute." in out and "╭─ python" in out and "x = 2 + 3" in out
    assert "output · python · ok" in out and "<|" not in out


class _TinyCatalog:
    """A plugin adding a catalog entry served by the local Hub stand-in."""

    def __init__(self, file: str) -> None:
        self.file = file

    @staticmethod
    def card(file: str):
        from mathsolve.catalog import GGUFFile, ModelCard

        return ModelCard(
            name="tiny", family="test", checkpoint="acme/tiny", protocol="qwen-tir", context=512,
            repo="acme/tiny-GGUF", default_quant="F32",
            files={"F32": GGUFFile("F32", file), "Q9": GGUFFile("Q9", "tiny.Q9.gguf", verified=False)},
        )


def _register_tiny(file: str) -> None:
    from mathsolve.hookspecs import hookimpl
    from mathsolve.plugins import get_plugin_manager

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(_TinyCatalog.card(file))

    get_plugin_manager().pm.register(Plugin(), name="tiny-catalog")


def test_pull_solve_offline_and_rm_against_the_hub_stand_in(fake_hub, tiny_bpe: Path) -> None:
    data = tiny_bpe.read_bytes()
    fake_hub.add_file("acme/tiny-GGUF", "tiny.F32.gguf", data)
    _register_tiny("tiny.F32.gguf")
    # First solve downloads (ollama-style) with progress on stderr.
    r = run("--model", "tiny", "--max-tokens", "4", "--json", QUESTION)
    assert r.exit_code == 0, r.output
    assert "tiny.F32.gguf" in r.stderr and json.loads(r.stdout)["model"]["name"] == "tiny"
    gets = fake_hub.requests_for("GET", "/resolve/main/tiny.F32.gguf")
    assert len(gets) == 1
    # Second run: no network call at all, even with the Hub gone.
    fake_hub.clear_requests()
    fake_hub.stop()
    r = run("--model", "tiny", "--max-tokens", "4", "--json", QUESTION)
    assert r.exit_code == 0, r.output
    assert fake_hub.requests == []
    listed = {row["name"]: row for row in json.loads(run("models", "--json").stdout)}
    assert listed["tiny"]["downloaded"] == ["F32"]
    r = run("rm", "tiny")
    assert r.exit_code == 0 and f"freed {len(data) / 1000:.2f} KB" in r.stdout
    assert run("rm", "tiny").stdout.startswith("tiny:F32 is not downloaded")


def test_inferred_file_name_is_confirmed_before_download(fake_hub, tiny_bpe: Path) -> None:
    fake_hub.add_file("acme/tiny-GGUF", "tiny.F32.gguf", tiny_bpe.read_bytes())
    _register_tiny("tiny.F32.gguf")
    r = run("pull", "tiny:Q9")
    assert r.exit_code == EXIT_DOWNLOAD
    assert "inferred" in r.stderr and "tiny.F32.gguf" in r.stderr
    assert fake_hub.requests_for("GET", "/resolve/main/tiny.Q9.gguf") == []


def test_ctrl_c_exits_130_and_keeps_the_partial_json(tiny_bpe: Path) -> None:
    import os
    import signal
    import time

    cmd = [sys.executable, "-m", "mathsolve", "--model", str(tiny_bpe), "--protocol", "tora",
           "--n-ctx", "32768", "--max-tokens", "32000", "--json", QUESTION]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    time.sleep(3.0)  # start-up and model load, then well inside the 32,000-token generation
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    record = json.loads(out)
    assert record["status"] == "interrupted" and 0 < record["tokens"]["generated"] < 32000
    assert "Traceback" not in err and "interrupted" in err
