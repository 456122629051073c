"""Tests of mathsolve.sandbox.run_program: any program, with arguments and stdin, under
run_python's confinement.

Only programs every Debian and macOS machine has (sh, cat, env, sleep, yes). After
each test no sandbox process may remain and the sandbox still works (``healthy``).
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import pytest

from mathsolve.sandbox import PROTECTIONS, Limits, capabilities, run_program, run_python
from tests.test_sandbox import LINUX, OUR_SANDBOXES, _assert_gone

QUICK = Limits(timeout_s=5.0)


@pytest.fixture(autouse=True)
def healthy():
    """After each test: no sandbox process left, and the next execution is normal."""
    yield
    _assert_gone(OUR_SANDBOXES)
    assert run_program(["echo", "42"], limits=QUICK).stdout == "42\n"
    assert run_python("print(6 * 7)", limits=QUICK).stdout == "42\n"


def test_stdin_comes_back_on_stdout():
    result = run_program(["cat"], stdin="ünïcode\nline 2\n", limits=QUICK)
    assert (result.status, result.stdout, result.stderr, result.error) == ("ok", "ünïcode\nline 2\n", "", None)
    assert (result.traceback, result.display) == (None, None)
    # Bytes go through as they are; what is not UTF-8 is decoded with replacement.
    assert run_program(["cat"], stdin=b"a\xffb", limits=QUICK).stdout == "a\ufffdb"
    assert run_program(["cat"], limits=QUICK).stdout == ""  # no stdin: end-of-file at once


def test_arguments_stdout_and_stderr_stay_apart():
    result = run_program(["sh", "-c", 'echo "$1 $2"; echo oops >&2', "sh", "two words", "*"], limits=QUICK)
    assert (result.status, result.stdout, result.stderr) == ("ok", "two words *\n", "oops\n")


def test_a_non_zero_exit_is_an_error_with_its_code():
    result = run_program(["sh", "-c", "echo partial; exit 3"], limits=QUICK)
    assert (result.status, result.error, result.stdout) == ("error", "Exited with code 3", "partial\n")


def test_the_wall_clock_is_a_timeout():
    started = time.monotonic()
    result = run_program(["sleep", "30"], limits=Limits(timeout_s=0.5))
    assert (result.status, result.error) == ("timeout", None)
    assert time.monotonic() - started < 5


def test_the_cpu_limit_is_a_timeout():
    started = time.monotonic()
    result = run_program(["sh", "-c", "while :; do :; done"], limits=Limits(timeout_s=20, cpu_s=1))
    assert result.status == "timeout"
    assert time.monotonic() - started < 10


def test_endless_output_is_cut_at_the_cap():
    result = run_program(["yes"], limits=Limits(timeout_s=5.0, output_bytes=1000))
    assert result.status == "output-limit"
    assert 0 < len(result.stdout) <= 1000 and set(result.stdout) <= {"y", "\n"}


def test_a_missing_program_is_a_result_not_an_exception():
    result = run_program(["no-such-program-anywhere", "-q"], limits=QUICK)
    assert (result.status, result.error, result.stdout, result.stderr) == (
        "error", "program not found: no-such-program-anywhere", "", "")
    # The caller's PATH, or the one it gives, is where the program is looked for.
    assert run_program(["sh", "-c", "exit 0"], env={"PATH": "/nonexistent"}).error == "program not found: sh"


def test_a_program_that_cannot_be_executed_inside_is_a_result(tmp_path):
    """Found by the caller, but not runnable in the sandbox: here a script whose
    interpreter does not exist (or, with a private /tmp, a script the sandbox cannot see)."""
    script = tmp_path / "broken"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    result = run_program([str(script)], limits=QUICK)
    assert result.status == "error"
    assert result.error in (f"program not found: {script}", f"cannot execute {script}: No such file or directory")


def test_malformed_arguments_are_refused():
    for argv in ("cat", [], [""], ["cat", None], ["cat", "a\0b"]):
        with pytest.raises(ValueError):
            run_program(argv)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run_program(["cat"], env={"A=B": "x"})
    with pytest.raises(TypeError):
        run_program(["cat"], stdin=3)  # type: ignore[arg-type]


def test_the_working_directory_is_private_empty_and_removed():
    result = run_program(["sh", "-c", "pwd; ls -A; echo x > f; ls; echo $HOME"], limits=QUICK)
    assert result.status == "ok"
    workdir, *listing, home = result.stdout.splitlines()
    assert listing == ["f"]  # empty before the program wrote f
    assert home == workdir
    root = os.path.realpath(tempfile.gettempdir())
    assert workdir.startswith(os.path.join(root, f"mathsolve-sandbox-{os.getpid()}-"))
    assert not os.path.exists(os.path.dirname(workdir))


def test_the_environment_is_minimal_with_the_callers_additions(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_value_456")
    result = run_program(["env"], limits=QUICK, env={"GREETING": "hello"})
    assert result.status == "ok"
    assert "secret_value" not in result.stdout
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert variables["GREETING"] == "hello"
    assert variables["PATH"].split(os.pathsep)[0] == os.path.dirname(os.path.abspath(_which("env")))
    allowed = {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "TMP", "TEMP", "TZ", "LD_LIBRARY_PATH",
               "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONNOUSERSITE", "OMP_NUM_THREADS",
               "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "MPLBACKEND", "GREETING"}
    assert set(variables) <= allowed


def _which(name: str, required: bool = True) -> str | None:
    import shutil

    found = shutil.which(name)
    assert found is not None or not required
    return found


def test_processes_left_behind_are_killed():
    _leave_processes_behind()


@pytest.mark.skipif(not LINUX, reason="Linux-specific fallback paths")
def test_without_namespaces_processes_left_behind_are_killed(monkeypatch):
    """Machines that refuse namespaces: the program is not PID 1 of its own namespace,
    the supervisor (a child subreaper) and the session kill find what it left."""
    from mathsolve.sandbox import launch  # internals: the no-namespaces switch

    monkeypatch.setattr(launch, "USE_NAMESPACES", False)
    assert "pidns" not in _leave_processes_behind()


def _leave_processes_behind() -> tuple[str, ...]:
    """A program that leaves a process behind, once ending and once timed out: gone both
    times. Returns the protections of the first run."""
    token = f"bg-{uuid.uuid4().hex}"
    # A shell (its $0 the token, so its command line names it) keeps running after the
    # program; setsid, where there is one, takes it out of the program's session too.
    escape = "setsid " if _which("setsid", required=False) else ""
    leave = f"{escape}sh -c 'sleep 60; :' {token} & echo started"
    result = run_program(["sh", "-c", leave], limits=QUICK)
    assert (result.status, result.stdout) == ("ok", "started\n")
    _assert_gone(token.encode())
    timed_out = run_program(["sh", "-c", leave + "; sleep 60"], limits=Limits(timeout_s=1.0))
    assert timed_out.status == "timeout"
    _assert_gone(token.encode())
    return result.protections


def test_same_confinement_as_run_python_but_no_python_flag():
    caps = capabilities()
    result = run_program(["sh", "-c", "exit 0"], limits=QUICK)
    expected = {name for name in PROTECTIONS if caps[name]} - {"isolated-python"}
    assert result.status == "ok"
    assert set(result.protections) == expected


@pytest.mark.skipif(not LINUX, reason="network namespaces are Linux-only")
def test_the_network_is_unreachable_where_the_kernel_allows():
    if not capabilities()["netns"]:
        pytest.skip("the kernel refuses a network namespace here: network stays reachable")
    # Inside a fresh network namespace only a loopback exists, and it is down.
    result = run_program(["cat", "/proc/net/dev"], limits=QUICK)
    interfaces = [line.split(":")[0].strip() for line in result.stdout.splitlines()[2:]]
    assert interfaces == ["lo"]
