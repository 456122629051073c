"""Every `mathsolve ...` command of the README, run the way a person types it.

The commands are read from the README itself (the "Using it" table, `$ ` lines of console
blocks, and command lines of bash blocks), in order, and each is run by bash in one folder
holding the files they name. What stands in for the outside world: a local Hub serving a
tiny real GGUF under the catalog's file names, a llama_cpp.server on localhost:8000 for the
remote example, and MATHSOLVE_MAX_TOKENS=8 so the tiny model's rambling stays short. A
README edit that adds an example adds a test case.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathsolve.testkit import write_tiny_gguf

README = Path(__file__).resolve().parents[1] / "README.md"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Catalog files the examples download (repo, file), served by the stand-in Hub.
SERVED = [
    ("second-state/Qwen2.5-Math-1.5B-Instruct-GGUF", "Qwen2.5-Math-1.5B-Instruct-Q4_K_M.gguf"),
    ("TheBloke/tora-7B-v1.0-GGUF", "tora-7b-v1.0.Q4_K_M.gguf"),
]


def readme_commands() -> list[str]:
    """Shell lines that start with `mathsolve`, or pipe into it, in README order."""
    text = README.read_text(encoding="utf-8")
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"^\| `([^`]*mathsolve[^`]*)` \|", text, re.M):  # the table's first column
        command = match.group(1).replace("\\|", "|")
        if command.startswith("mathsolve ") or command == "mathsolve" or "| mathsolve" in command:
            found.append((match.start(), command))
    for block in re.finditer(r"```(console|bash)\n(.*?)```", text, re.S):
        lines = block.group(2).replace("\\\n", " ").splitlines()
        for line in lines:
            command = line[2:] if block.group(1) == "console" and line.startswith("$ ") else line
            if command.startswith("mathsolve "):
                found.append((block.start(), " ".join(command.split())))  # continuation lines joined
    return [command for _, command in sorted(found)]


COMMANDS = readme_commands()


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """The folder the examples run in, and the environment of a fresh user on a machine
    whose Hub is the stand-in."""
    from tests.hub_server import FakeHub

    home = tmp_path_factory.mktemp("readme-user")
    work = home / "work"
    work.mkdir()
    models = tmp_path_factory.mktemp("readme-models")
    qwen = write_tiny_gguf(models / "qwen.gguf", tokenizer="bpe", special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    llama = write_tiny_gguf(models / "llama.gguf", tokenizer="spm")
    write_tiny_gguf(work / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", tokenizer="bpe",
                    special_tokens=("<|im_start|>", "<|im_end|>"), chat_template=CHATML)
    (work / "homework.txt").write_text("What is 12 + 30?\nA train goes 60 km in 1.5 hours. What is its speed?\n")
    (work / "block.py").write_text("from sympy import symbols, solve\nx = symbols('x')\nprint(solve(x**2 - 4, x))\n")
    (home / "config.toml").write_text("")
    hub = FakeHub().start()
    hub.add_file(SERVED[0][0], SERVED[0][1], qwen.read_bytes())
    hub.add_file(SERVED[1][0], SERVED[1][1], llama.read_bytes())
    env = {
        "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "MATHSOLVE_CONFIG": str(home / "config.toml"),
        "HF_HOME": str(home / "hf"), "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
        "MATHSOLVE_MAX_TOKENS": "8", "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    server = None
    if _free(8000):  # the remote example names localhost:8000; a llama_cpp.server stands in for vLLM
        server = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(llama), "--model_alias",
             "llm-agents/tora-code-34b-v1.0", "--host", "127.0.0.1", "--port", "8000", "--n_ctx", "4096"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while _free(8000) and time.monotonic() < deadline:
            time.sleep(0.2)
    yield work, env, server is not None
    if server is not None:
        server.terminate()
        server.wait(timeout=30)
    hub.stop()


def test_the_readme_has_the_examples_this_test_expects() -> None:
    assert len(COMMANDS) >= 20
    assert any(c.startswith("mathsolve \"Janet's ducks lay 16 eggs per day.") and c.endswith('market?"') for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_readme_example_runs_as_typed(command: str, world) -> None:
    work, env, server_up = world
    if "localhost:8000" in command and not server_up:
        pytest.skip("port 8000 is taken on this machine; the remote example needs it for its stand-in server")
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL if not command.startswith("cat ") else None)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    if command.startswith('mathsolve "Janet'):
        assert "Answer:" in proc.stdout
