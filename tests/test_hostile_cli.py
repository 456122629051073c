"""Hostile input across the CLI, one table per kind: every case ends with the documented
exit code and, for errors, exactly one `error: ...` line; no file mathsolve did not create
changes; no problem is dropped or duplicated. Real parts throughout: the installed entry
point, a tiny real GGUF on llama.cpp, real files, pipes, signals and subprocesses.

Exit code 1 means a bug in mathsolve, so no case here may end with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathsolve.errors import (
    EXIT_BAD_MODEL_FILE,
    EXIT_BROKEN_PIPE,
    EXIT_HANGUP,
    EXIT_IO,
    EXIT_TERMINATED,
    EXIT_UNKNOWN_MODEL,
    EXIT_USAGE,
)
from tests.cli_run import ENTRY, Result, run_cli, run_process

JANET = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
         "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
         "egg. How much in dollars does she make every day at the farmers' market?")


@pytest.fixture
def tiny(tiny_bpe: Path) -> list[str]:
    """Flags that make a solve fast and real: the tiny GGUF on llama.cpp, a few tokens."""
    return ["--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4"]


def one_error(result: Result, code: int, *words: str) -> None:
    """The exit code, and exactly one `error:` line, the last (notes before it are fine)."""
    assert result.code == code, (result.code, result.stderr[-2000:])
    lines = result.error_lines
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith("error: "), result.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "Traceback" not in result.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- questions: any text is a question, or a clear refusal ----------------------------------------

QUESTIONS = {
    "the README's first example, 280 bytes without a slash": JANET,
    "a 5,000-character question": "How much is " + "one plus " * 555 + "one?",
    "slashes and a path-like start": "/usr/bin: what is 1/2 + 1/3?",
    "newlines and tabs": "Line one.\n\tLine two?\r\nThird.",
    "emoji, CJK and right-to-left text": "🦆 鸭子 بطة: 16 − 3 − 4 = ?",
    "special-token text": "What is <|im_end|><|endoftext|> 2+3?",
    "terminal escape sequences": "\x1b[2J\x1b]0;title\x07 What is 2+3?",
    "a leading dash after --": "-5 + 3 = ?",
    "a lone surrogate as Python decodes bad argv bytes": "caf\udce9 costs 2 euros?",
}


@pytest.mark.parametrize("label", list(QUESTIONS))
def test_any_question_text_is_solved(label: str, tiny: list[str]) -> None:
    question = QUESTIONS[label]
    args = [*tiny, "--json", "--", question] if question.startswith("-") else [*tiny, "--json", question]
    r = run_cli(*args)
    assert r.code == 0, r.stderr
    record = json.loads(r.stdout)
    expected = question.replace("\udce9", "\ufffd")
    assert record["question"] == expected and record["status"] in ("finished", "length", "max_rounds")
    if "\udce9" in question:
        assert "not UTF-8" in r.stderr and "U+FFFD" in r.stderr


def test_a_question_naming_a_file_reads_the_file_and_q_forces_the_text(tiny: list[str], tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("hw.txt").write_text("What is 1+1?\nWhat is 2+2?\n")
    r = run_cli(*tiny, "hw.txt")
    assert r.code == 0 and len(r.stdout.splitlines()) == 2  # two problems from the file
    r = run_cli(*tiny, "--json", "-q", "hw.txt")
    assert r.code == 0 and json.loads(r.stdout)["question"] == "hw.txt"


REFUSED_QUESTIONS = [
    (["   "], EXIT_USAGE, "empty"),
    ([""], EXIT_USAGE, "empty"),
    (["-q", ""], EXIT_USAGE, "empty"),
    (["-q", "x", "other"], EXIT_USAGE, "either -q"),
    (["doctr"], EXIT_USAGE, "did you mean 'doctor'"),
    (["modles"], EXIT_USAGE, "did you mean 'models'"),
    (["what", "is", "2+2"], EXIT_USAGE, "no such file: what"),
    (["--modle", "x", "q"], EXIT_USAGE, "No such option: --modle"),
    (["--threads", "abc", "q"], EXIT_USAGE, "--threads"),
    (["-n", "0", "q"], EXIT_USAGE, "--samples"),
    (["-n", "99999999999", "q"], EXIT_USAGE, "--samples"),
    (["models", "show"], EXIT_USAGE, "Missing argument"),
    (["eval", "gsm8k", "--limit", "-1"], EXIT_USAGE, "--limit"),
    (["eval", "no-such-set"], EXIT_USAGE, "unknown data set"),
    (["replay", "missing.jsonl"], EXIT_USAGE, "no such file"),
    (["grade", "x" * 5000], EXIT_USAGE, "no such file"),
]


@pytest.mark.parametrize("args, code, message", REFUSED_QUESTIONS, ids=[" ".join(a)[:40] for a, _, _ in REFUSED_QUESTIONS])
def test_bad_arguments_are_one_line_and_an_exit_code(args: list[str], code: int, message: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    one_error(run_cli(*args), code, message)


def test_no_arguments_in_a_terminal_says_how_to_ask(tiny_bpe: Path) -> None:
    """`mathsolve` alone at a prompt: stdin is a terminal, so nothing is piped in."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([ENTRY], stdin=follower, capture_output=True, text=True, timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().splitlines() == ['error: no question given: mathsolve "QUESTION" '
                                                "(or give FILEs, or pipe problems on stdin)"]


def test_a_directory_argument_is_refused(tmp_path: Path, tiny: list[str]) -> None:
    one_error(run_cli(*tiny, str(tmp_path)), EXIT_USAGE, "is a directory")


# -- model files ---------------------------------------------------------------------------------------

def _huge_key(path: Path) -> None:
    import struct

    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**56) + b"key")


MODELS = {
    "missing": (lambda p: None, EXIT_BAD_MODEL_FILE, "not found"),
    "a directory": (lambda p: p.mkdir(), EXIT_BAD_MODEL_FILE, ""),
    "empty": (lambda p: p.write_bytes(b""), EXIT_BAD_MODEL_FILE, ""),
    "text": (lambda p: p.write_text("hello"), EXIT_BAD_MODEL_FILE, "not a GGUF"),
    "an HTML page": (lambda p: p.write_text("<!DOCTYPE html><html>Not found</html>"), EXIT_BAD_MODEL_FILE, "not a GGUF"),
    "a key length of 2^56": (_huge_key, EXIT_BAD_MODEL_FILE, ""),
    "magic only": (lambda p: p.write_bytes(b"GGUF"), EXIT_BAD_MODEL_FILE, "truncated"),
}


@pytest.mark.parametrize("label", list(MODELS))
def test_bad_model_files(label: str, tmp_path: Path) -> None:
    make, code, message = MODELS[label]
    path = tmp_path / "m.gguf"
    make(path)
    one_error(run_cli("--model", str(path), "--protocol", "tora", "q"), code, message)


def test_a_truncated_real_model(tiny_bpe: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_bpe.read_bytes()[: tiny_bpe.stat().st_size // 2])
    one_error(run_cli("--model", str(path), "--protocol", "tora", "q"), EXIT_BAD_MODEL_FILE, "truncated")


@pytest.mark.parametrize("model, message", [("tora-7", "did you mean tora-7b"), ("tora-7b:Q9_Z", "available"),
                                            ("x" * 300, "unknown model")])
def test_unknown_catalog_models(model: str, message: str) -> None:
    one_error(run_cli("--model", model, "q"), EXIT_UNKNOWN_MODEL, message)


# -- settings: flag, environment and config file alike ------------------------------------------------

# (setting, flag or None, a bad value as typed, the same as a TOML value)
BAD_SETTINGS = [
    ("threads", "--threads", "0", "0"),
    ("threads", "--threads", "-4", "-4"),
    ("threads", "--threads", "100000", "100000"),
    ("threads", "--threads", "5000", "5000"),
    ("temperature", "--temperature", "nan", "nan"),
    ("temperature", "--temperature", "inf", "inf"),
    ("temperature", "--temperature", "-1", "-1.0"),
    ("top_p", "--top-p", "-2", "-2.0"),
    ("top_p", "--top-p", "0", "0.0"),
    ("top_p", "--top-p", "1.5", "1.5"),
    ("top_k", None, "-1", "-1"),
    ("min_p", None, "2", "2.0"),
    ("seed", "--seed", "-1", "-1"),
    ("seed", "--seed", "4294967296", "4294967296"),
    ("max_tokens", "--max-tokens", "-5", "-5"),
    ("max_tokens", "--max-tokens", "0", "0"),
    ("max_rounds", "--max-rounds", "-1", "-1"),
    ("max_rounds", "--max-rounds", "0", "0"),
    ("n_ctx", "--n-ctx", "10", "10"),
    ("n_ctx", "--n-ctx", "0", "0"),
    ("n_ctx", "--n-ctx", "99999999999", "99999999999"),
    ("n_gpu_layers", "--n-gpu-layers", "-5", "-5"),
    ("tool_timeout", "--tool-timeout", "-5", "-5"),
    ("tool_timeout", "--tool-timeout", "nan", "nan"),
    ("tool_timeout", "--tool-timeout", "inf", "inf"),
    ("tool_timeout", "--tool-timeout", "1e308", "1e308"),
    ("tool_timeout", "--tool-timeout", "0", "0"),
    ("tool_memory_mb", None, "-1", "-1"),
    ("tool_memory_mb", None, "0", "0"),
    ("request_timeout", "--request-timeout", "0", "0.0"),
    ("request_timeout", "--request-timeout", "nan", "nan"),
    ("concurrency", "--concurrency", "0", "0"),
    ("kv_cache", "--kv-cache", "q9", '"q9"'),
    ("flash_attn", "--flash-attn", "maybe", '"maybe"'),
    ("extra_buffers", "--extra-buffers", "sometimes", '"sometimes"'),
    ("offline", None, "perhaps", '"perhaps"'),
    ("model", "--model", "", '""'),
]
SETTING_CASES = [(name, source, flag, value, toml) for name, flag, value, toml in BAD_SETTINGS
                 for source in ("flag", "env", "config") if source != "flag" or flag is not None]


@pytest.mark.parametrize("name, source, flag, value, toml", SETTING_CASES,
                         ids=[f"{s}-{n}={v}" for n, s, _, v, _ in SETTING_CASES])
def test_every_bad_setting_is_refused_naming_its_source(name, source, flag, value, toml, tiny_bpe: Path,
                                                        isolated_user: Path) -> None:
    args = ["--model", str(tiny_bpe), "--protocol", "tora", "q"]
    env: dict[str, str | None] = {}
    if source == "flag":
        args = [flag, value, *args] if name != "model" else [flag, value, "--protocol", "tora", "q"]
        where = f"flag {flag}"
    elif source == "env":
        env[f"MATHSOLVE_{name.upper()}"] = value
        where = f"env MATHSOLVE_{name.upper()}"
        if name == "model":
            pytest.skip("an empty environment variable means 'not set'")
    else:
        (isolated_user / "config.toml").write_text(f"{name} = {toml}\n")
        where = "config"
        if name == "model":
            args = ["--protocol", "tora", "q"]
    r = run_cli(*args, env=env)
    one_error(r, EXIT_USAGE, name, where)


@pytest.mark.parametrize("content, message", [
    ("temperature = [", "not valid TOML"),
    ("colour = 1", "unknown setting"),
    ("threads = true", "expected a number"),
    ("threads = 2.5", "whole number"),
    ('model = 5', "expected a string"),
    ('model = "a\\u0000b"', "NUL"),
    ("[section]\nx = 1", "unknown setting"),
])
def test_bad_config_files(content: str, message: str, isolated_user: Path) -> None:
    (isolated_user / "config.toml").write_text(content)
    one_error(run_cli("q"), EXIT_USAGE, message)


def test_config_file_that_is_not_utf8_or_missing_or_a_directory(isolated_user: Path, tmp_path: Path) -> None:
    (isolated_user / "config.toml").write_bytes(b"model = \"caf\xe9\"\n")
    one_error(run_cli("q"), EXIT_USAGE, "not UTF-8")
    one_error(run_cli("q", env={"MATHSOLVE_CONFIG": str(tmp_path / "nope.toml")}), EXIT_USAGE, "does not exist")
    one_error(run_cli("q", env={"MATHSOLVE_CONFIG": str(tmp_path)}), EXIT_USAGE, "is a directory")


def test_a_prompt_longer_than_the_context_is_a_length_status_not_a_crash(tiny: list[str]) -> None:
    r = run_cli(*tiny, "--n-ctx", "64", "--json", JANET * 3)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "length"


def test_a_context_too_large_for_memory_is_refused_before_llama_cpp_allocates_it(
        tiny_bpe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU an oversized KV cache may seem to allocate and the process is killed later;
    the estimate from the GGUF header refuses it first. (The tiny model needs 4 GiB at the
    largest context; the machine is made to look small rather than allocating that.)"""
    import mathsolve.engines.llama.params as llama_engine

    monkeypatch.setattr(llama_engine, "available_memory", lambda: 2**30)
    r = run_cli("--model", str(tiny_bpe), "--protocol", "tora", "--n-ctx", str(2**24), "--max-tokens", "1", "q")
    one_error(r, EXIT_USAGE, "KV cache", "4.0 GiB")
    assert run_cli("--model", str(tiny_bpe), "--protocol", "tora", "--n-ctx", "8192", "--max-tokens", "1", "q").code == 0


# -- output files -----------------------------------------------------------------------------------------

@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "hw.txt"
    path.write_text("What is 1+1?\nWhat is 2+2?\nWhat is 3+3?\n")
    return path


def test_output_that_is_an_input_is_refused_untouched(tiny: list[str], problems: Path) -> None:
    before = digest(problems)
    one_error(run_cli(*tiny, "-o", str(problems), str(problems)), EXIT_USAGE, "is an input")
    assert digest(problems) == before


def test_output_that_is_the_model_or_a_gguf_is_refused_untouched(tiny_bpe: Path, problems: Path, tmp_path: Path) -> None:
    model = tmp_path / "victim.gguf"
    model.write_bytes(tiny_bpe.read_bytes())
    before = digest(model)
    one_error(run_cli("--model", str(model), "--protocol", "tora", "-o", str(model), str(problems)), EXIT_USAGE)
    other = tmp_path / "model.bin"  # a GGUF without the suffix: recognised by its magic
    other.write_bytes(tiny_bpe.read_bytes())
    one_error(run_cli("--model", str(tiny_bpe), "--protocol", "tora", "-o", str(other), str(problems)), EXIT_USAGE, "GGUF")
    assert digest(model) == before and digest(other) == digest(tiny_bpe)


FOREIGN = {
    "notes without a final newline": b"my notes\nmore notes",
    "a binary file": bytes(range(256)) * 4,
    "JSON lines that are not records": b'{"a": 1}\n{"b": 2}\n',
    "records, then foreign text without a newline": b'{"id": "x", "schema": "mathsolve.solution/1"}\nPS: hi',
    "a UTF-16 text": "hello\n".encode("utf-16"),
}


@pytest.mark.parametrize("label", list(FOREIGN))
def test_an_existing_file_mathsolve_did_not_write_is_never_changed(label: str, tiny: list[str], problems: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(FOREIGN[label])
    one_error(run_cli(*tiny, "-o", str(out), str(problems)), EXIT_USAGE, "not")
    assert out.read_bytes() == FOREIGN[label]
    assert not Path(str(out) + ".lock").exists()


@pytest.mark.parametrize("target, code, message", [
    ("", EXIT_USAGE, "needs a file name"),
    (".", EXIT_USAGE, "needs a file name"),
    ("/dev/null", EXIT_USAGE, "not a regular file"),
    ("{tmp}", EXIT_USAGE, "is a directory"),
    ("{problems}/out.jsonl", EXIT_IO, ""),
    ("/proc/version", EXIT_IO, "/proc/version"),
    ("/proc/no-such/out.jsonl", EXIT_IO, ""),
])
def test_output_paths_that_cannot_be_written(target: str, code: int, message: str, tiny: list[str], problems: Path,
                                             tmp_path: Path) -> None:
    target = target.format(tmp=tmp_path, problems=problems)
    one_error(run_cli(*tiny, "-o", target, str(problems)), code, message)


def test_a_write_failure_mid_batch_is_an_io_error_and_keeps_what_was_written(tiny_bpe: Path, problems: Path,
                                                                            tmp_path: Path) -> None:
    """A file-size limit makes the second record's write fail, as a full disk does."""
    import resource

    out = tmp_path / "out.jsonl"
    first = run_process([ENTRY, "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "-o", str(out),
                         str(problems)])
    assert first.code == 0
    size = out.stat().st_size
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\n")  # as if the run had stopped after one problem

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    r = run_process([ENTRY, "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "-o", str(out),
                     str(problems)], preexec_fn=limit)
    one_error(r, EXIT_IO, "out.jsonl")
    assert out.read_text().splitlines()[0] == lines[0]
    again = run_process([ENTRY, "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "4", "-o", str(out),
                         str(problems)])
    assert again.code == 0
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == 3 == len(set(ids))


def test_a_second_run_on_the_same_output_refuses_naming_the_first_or_waits(tiny: list[str], problems: Path,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from mathsolve.files.outputs import RunLock\n"
        f"lock = RunLock(Path({str(out)!r})).acquire(); print('held', flush=True); time.sleep(3); lock.release()")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_error(run_cli(*tiny, "-o", str(out), str(problems)), EXIT_IO, "another mathsolve run", f"pid {holder.pid}")
        started = time.monotonic()
        r = run_cli(*tiny, "--wait", "-o", str(out), str(problems))
        assert r.code == 0 and time.monotonic() - started > 1.0 and "waiting for" in r.stderr
    finally:
        holder.wait(timeout=30)
    assert len(out.read_text().splitlines()) == 3
    assert not Path(str(out) + ".lock").exists()


def test_two_runs_started_together_never_write_a_record_twice(tiny_bpe: Path, tmp_path: Path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("".join(f"What is {i} + {i}?\n" for i in range(12)))
    out = tmp_path / "out.jsonl"
    cmd = [ENTRY, "--model", str(tiny_bpe), "--protocol", "tora", "--max-tokens", "64", "-o", str(out), str(source)]
    runs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = [run.wait(timeout=120) for run in runs]
    errors = [run.stderr.read() for run in runs]
    assert sorted(codes) in ([0, 0], [0, EXIT_IO]), errors  # the second one waits its turn, or is refused
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == 12 == len(set(ids))


def test_output_that_is_also_stdout_is_refused(tiny_bpe: Path, problems: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")
    r = run_process([f"{ENTRY} --model {tiny_bpe} --protocol tora -o {out} --jsonl {problems} >> {out}"], shell=True)
    one_error(r, EXIT_USAGE, "stdout")


# -- ids: every problem solved exactly once, by the settings that claim it -----------------------------

def test_files_with_the_same_name_in_two_folders_are_both_solved(tiny: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for folder in ("da", "db"):
        Path(folder).mkdir()
        Path(folder, "test.jsonl").write_text(f'{{"id": 1, "question": "{folder} one"}}\n'
                                              f'{{"id": 2, "question": "{folder} two"}}\n')
    r = run_cli(*tiny, "da/test.jsonl", "db/test.jsonl", "-o", "out.jsonl")
    assert r.code == 0, r.stderr
    records = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["da/test:1", "da/test:2", "db/test:1", "db/test:2"]
    # Each file alone into one output: both label their ids `test:N`, so the second file's
    # problems would look done; the changed question under the same id is refused instead.
    assert run_cli(*tiny, "da/test.jsonl", "-o", "single.jsonl").code == 0
    one_error(run_cli(*tiny, "db/test.jsonl", "-o", "single.jsonl"), EXIT_USAGE, "different problem")


def test_duplicate_ids_in_one_file_keep_both_problems(tiny: list[str], tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": 1, "question": "first"}\n{"id": 1, "question": "second"}\n{"id": 1, "question": "first"}\n')
    r = run_cli(*tiny, str(data), "--jsonl")
    assert r.code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["id"], x["question"]) for x in records] == [("d:1", "first"), ("d:1#2", "second")]
    assert "already used by a different problem" in r.stderr


def test_resuming_with_other_settings_refuses_to_mix(tiny: list[str], problems: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert run_cli(*tiny, "-o", str(out), str(problems)).code == 0
    before = out.read_bytes()
    records = [json.loads(line) for line in before.decode().splitlines()]
    assert all(r["run"]["protocol"] == "tora" and r["run"]["grader"] == "reference" for r in records)
    for flags in (["--protocol", "qwen-tir"], ["--temperature", "0.5"], ["-n", "2"], ["--max-tokens", "5"]):
        args = [*tiny, *flags] if flags[0] != "--protocol" else [tiny[0], tiny[1], *flags, "--max-tokens", "4"]
        one_error(run_cli(*args, "-o", str(out), str(problems)), EXIT_USAGE, "other settings")
        assert out.read_bytes() == before


def test_eval_with_other_settings_writes_another_file(tiny_bpe: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["eval", "gsm8k", "--model", str(tiny_bpe), "--limit", "2", "--max-tokens", "4", "--json"]
    first = run_cli(*base, "--protocol", "qwen-tir")
    second = run_cli(*base, "--protocol", "qwen-cot")
    assert first.code == second.code == 0, (first.stderr, second.stderr)
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["output"] != b["output"] and "other settings" in second.stderr
    assert a["run"]["protocol"] == "qwen-tir" and b["run"]["protocol"] == "qwen-cot"
    for report in (a, b):
        protocols = {json.loads(line)["run"]["protocol"] for line in Path(report["output"]).read_text().splitlines()}
        assert protocols == {report["run"]["protocol"]}
    again = run_cli(*base, "--protocol", "qwen-tir")
    assert json.loads(again.stdout)["output"] == a["output"] and "already done" in again.stderr


# -- input streams and JSON ------------------------------------------------------------------------------

HOSTILE_LINES = {
    "nested 100,000 levels": '{"id": 9, "question": ' + "[" * 100_000 + "}",
    "a 5,000-digit integer answer": '{"id": 9, "question": "big", "answer": ' + "7" * 5000 + "}",
    "not an object": "[1, 2, 3]",
    "invalid JSON": "{not json",
    "no question field": '{"id": 9, "q": "x"}',
    "an empty problem": '{"id": 9, "question": "  "}',
    "a NUL in the problem": '{"id": 9, "question": "a\\u0000b"}',
    "a lone surrogate escape": '{"id": 9, "question": "x\\ud800y"}',
    "a 100,000-key object": "{" + ", ".join(f'"k{i}": {i}' for i in range(100_000)) + "}",
}


@pytest.mark.parametrize("label", list(HOSTILE_LINES))
def test_a_hostile_jsonl_line_is_one_input_error_and_the_batch_goes_on(label: str, tiny: list[str],
                                                                       tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"id": 1, "question": "What is 1+1?", "answer": "2"}\n' + HOSTILE_LINES[label] + "\n"
                    '{"id": 3, "question": "What is 3+3?", "answer": "6"}\n')
    out = tmp_path / "out.jsonl"
    for _ in range(2):  # the run, then its resume
        r = run_cli(*tiny, str(data), "-o", str(out))
        assert r.code in (0, EXIT_USAGE), r.stderr
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    records = {json.loads(line)["id"]: json.loads(line) for line in out.read_text().splitlines()}
    assert "in:1" in records and "in:3" in records and len(records) == 3
    graded = run_cli("grade", str(out), "--json")
    assert graded.code == 0, graded.stderr


def test_input_errors_are_counted_apart_and_make_the_exit_code_2(tiny: list[str], tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text("{nope\n[1]\n")
    r = run_cli(*tiny, str(data))
    assert r.code == EXIT_USAGE and "0 solved" in r.stderr and "2 input error(s)" in r.stderr


STDIN = {
    "invalid UTF-8": (b"caf\xe9 costs 2 euros. What is 2+2?\n", 0, "not UTF-8"),
    "UTF-8 with a BOM, JSONL": (b'\xef\xbb\xbf{"id": 1, "question": "bom first"}\n{"id": 2, "question": "x"}\n', 0, ""),
    "UTF-16 without a BOM": ("What is 1+1?\nWhat is 2+2?\n".encode("utf-16-le"), 0, ""),
    "UTF-16 with a BOM": ("What is 1+1?\n".encode("utf-16"), 0, ""),
    "binary": (bytes(range(256)), EXIT_USAGE, "binary"),
    "empty": (b"", EXIT_USAGE, "no problems"),
    "only blank lines": (b"\n\n  \n", EXIT_USAGE, "no problems"),
}


@pytest.mark.parametrize("label", list(STDIN))
def test_stdin_in_any_encoding(label: str, tiny: list[str]) -> None:
    data, code, message = STDIN[label]
    r = run_cli(*tiny, "--jsonl", input=data)
    if code:
        one_error(r, code, message)
        return
    assert r.code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records and all("\x00" not in x["question"] for x in records)
    assert message in r.stderr
    if "BOM, JSONL" in label:
        assert [x["question"] for x in records] == ["bom first", "x"]
    if "UTF-16" in label:
        assert records[0]["question"] == "What is 1+1?"


def test_dev_stdin_and_process_substitution_are_files(tiny_bpe: Path) -> None:
    base = f"{ENTRY} --model {tiny_bpe} --protocol tora --max-tokens 4"
    r = run_process([f"printf 'What is 1+1?\\nWhat is 2+2?\\n' | {base} /dev/stdin"], shell=True)
    assert r.code == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    r = run_process([f"{base} <(printf 'What is 1+1?\\nWhat is 2+2?\\n')"], shell=True)
    assert r.code == 0 and len(r.stdout.splitlines()) == 2, r.stderr


def test_stdout_closed_full_or_gone(tiny_bpe: Path, problems: Path) -> None:
    base = f"{ENTRY} --model {tiny_bpe} --protocol tora --max-tokens 4"
    one_error(run_process([f"{base} q >&-"], shell=True), EXIT_IO, "standard output is closed")
    one_error(run_process([f"{base} q > /dev/full"], shell=True), EXIT_IO, "no space left")
    one_error(run_process([f"{base} --json q > /dev/full"], shell=True), EXIT_IO, "no space left")
    many = problems.parent / "many.txt"
    many.write_text("".join(f"What is {i}*{i}?\n" for i in range(400)))
    r = run_process([f"{base} {many} | head -1; exit ${{PIPESTATUS[0]}}"], shell=True)
    assert r.code == EXIT_BROKEN_PIPE and r.error_lines == [] or all("solved" in x for x in r.error_lines), r.stderr
    r = run_process([f"{ENTRY} --help | head -1; exit ${{PIPESTATUS[0]}}"], shell=True)
    assert r.code == EXIT_BROKEN_PIPE and r.stderr == ""
    r = run_process([f"{base} q <&-"], shell=True)
    assert r.code == 0, r.stderr  # a closed stdin does not matter to a question argument


# -- signals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGHUP, EXIT_HANGUP)])
def test_sigterm_and_sighup_end_like_ctrl_c(sig: int, code: int, tiny_bpe: Path) -> None:
    cmd = [ENTRY, "--model", str(tiny_bpe), "--protocol", "tora", "--n-ctx", "32768", "--max-tokens", "32000",
           "--json", "Janet's ducks lay 16 eggs per day. How many eggs in two days?"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    record = json.loads(out)
    assert record["status"] == "interrupted" and record["answer"] is None and "Traceback" not in err


def test_sigterm_mid_batch_keeps_records_cleans_up_and_resumes(tiny_bpe: Path, tmp_path: Path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("".join(f"Janet's ducks lay {i} eggs per day. How many eggs in two days?\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    cmd = [ENTRY, "--model", str(tiny_bpe), "--protocol", "tora", "--n-ctx", "8192", "--max-tokens", "3000",
           "-o", str(out), str(source)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == EXIT_TERMINATED, err
    assert not Path(str(out) + ".lock").exists()
    assert not [p for p in Path("/tmp").glob(f"mathsolve-*-{proc.pid}-*")]
    kept = out.read_text().splitlines()
    assert kept and all(json.loads(line)["id"] for line in kept)


# -- what a solve prints ---------------------------------------------------------------------------------

def test_plain_output_flags_a_cut_off_answer(tiny: list[str]) -> None:
    r = run_cli("--model", tiny[1], "--protocol", "tora", "--max-tokens", "3", "--plain", JANET)
    assert r.code == 0 and r.stdout.splitlines()[-1].startswith("Answer:")
    status = "length" if "status length" in r.stderr else None
    assert status == "length", r.stderr


def test_replay_below_min_rate_is_exit_8_not_1(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    record = {"question": "q", "gt": "2", "code": ["```python\nprint(1)\n```\n```output\n7\n```\n"], "pred": ["7"],
              "report": [None], "idx": 0}
    path.write_text(json.dumps(record) + "\n")
    r = run_cli("replay", str(path), "--min-rate", "100")
    assert r.code == 8, r.stderr
    assert r.error_lines[-1].startswith("error: ") and "below --min-rate" in r.error_lines[-1]
