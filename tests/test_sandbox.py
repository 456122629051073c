"""Tests of mathsolve.sandbox: the executor's semantics, then adversarial code.

Every adversarial test must return within its limit, leave no process behind and
leave the sandbox usable: the ``healthy`` fixture checks both after each test.
Most adversarial cases run twice (the ``execute`` fixture): through ``run_python``
and through a ``WarmPython`` zygote, where "usable" means that the NEXT block on the
same backend runs normally and that only the zygote's own three processes remain.
Protections the kernel refuses on a given machine turn the matching assertions
into skips (with the reason), never into failures.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import mathsolve
from mathsolve import sandbox
from mathsolve.sandbox import PROTECTIONS, ExecResult, Limits, SandboxError, WarmPython, capabilities, run_python
from mathsolve.sandbox import launch  # internals: the runner's location, the no-namespaces switch
from mathsolve.sandbox.cgroups import pids_cgroup_parent

LINUX = sys.platform.startswith("linux")
QUICK = Limits(timeout_s=2.0)
# The folder that holds the mathsolve package (a checkout, or site-packages).
PACKAGE_ROOT = str(Path(mathsolve.__file__).resolve().parents[1])
# The runner's own folder: its frames never show in a traceback.
RUNNER_DIR = os.path.dirname(launch.RUNNER)
# The runner's command line holds its job file, in a temporary dir named after
# the calling process: this matches the sandboxes of THIS test process only
# (other processes on the machine may run sandboxes concurrently).
OUR_SANDBOXES = f"mathsolve-sandbox-{os.getpid()}-".encode()
# A warm zygote's processes (supervisor, init, zygote, and each block while it runs)
# are named after its own directory instead.
OUR_ZYGOTES = f"mathsolve-warm-{os.getpid()}-".encode()


@pytest.fixture(scope="module")
def caps() -> dict[str, bool | str]:
    return capabilities()


def _processes_with(token: bytes) -> list[int]:
    """Pids whose command line contains ``token`` (zombies have an empty one)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if token in cmdline:
            found.append(int(name))
    return found


def _assert_gone(token: bytes) -> None:
    if not LINUX:
        return
    deadline = time.monotonic() + 1.0  # SIGKILLed processes take a moment to vanish
    while _processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _processes_with(token) == [], f"processes matching {token!r} outlived the call"


@pytest.fixture
def healthy():
    """After the test: no sandbox process left, and the next execution is normal."""
    yield
    _assert_gone(OUR_SANDBOXES)
    after = run_python("print(6 * 7)", limits=QUICK)
    assert (after.status, after.stdout) == ("ok", "42\n")


def run(code: str, **limits_kw) -> ExecResult:
    return run_python(textwrap.dedent(code), limits=Limits(**{"timeout_s": 2.0, **limits_kw}))


@pytest.fixture(scope="module")
def warm():
    """One zygote for the module's warm cases (no preload: restarts stay cheap)."""
    backend = WarmPython()
    yield backend
    close_warm(backend)


def close_warm(backend: WarmPython) -> None:
    """Close ``backend``; its zygote's processes must all be gone."""
    zygote = backend._slot.worker
    backend.close()
    if zygote is not None:
        _assert_gone(os.path.basename(zygote.root).encode())
    assert_no_orphaned_zygote_processes()


def zygote_processes(backend: WarmPython) -> list[int]:
    """The processes of ``backend``'s current zygote (its directory names them)."""
    zygote = backend._slot.worker
    return _processes_with(os.path.basename(zygote.root).encode()) if zygote is not None else []


def assert_no_orphaned_zygote_processes() -> None:
    """No process of this test process's warm zygotes outlives its zygote (whose
    directory exists exactly as long as the zygote). Zygotes still in use, e.g. the
    tool plugins', may live on."""
    if not LINUX:
        return

    def orphans() -> list[str]:
        found = []
        for pid in _processes_with(OUR_ZYGOTES):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            job = next((a.decode() for a in args if OUR_ZYGOTES in a), None)
            if job is not None and not os.path.exists(os.path.dirname(job)):
                found.append(job)
        return found

    deadline = time.monotonic() + 1.0  # SIGKILLed processes take a moment to vanish
    while orphans() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert orphans() == [], "processes outlived their warm zygote"


def assert_warm_healthy(backend: WarmPython) -> None:
    """The next block on the same backend runs normally, and then nothing is left
    but the zygote itself (supervisor, init and zygote) and no earlier zygote."""
    after = backend.run("print(6 * 7)", limits=QUICK)
    assert (after.status, after.stdout, after.stderr) == ("ok", "42\n", "")
    if LINUX:
        deadline = time.monotonic() + 1.0
        while len(zygote_processes(backend)) > 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(zygote_processes(backend)) == 3
        assert_no_orphaned_zygote_processes()


@pytest.fixture(params=["cold", "warm"])
def execute(request, warm):
    """``execute(code, **limits) -> ExecResult`` through run_python ("cold") or a
    WarmPython zygote ("warm"), with the matching health check afterwards."""
    if request.param == "cold":
        yield run
        _assert_gone(OUR_SANDBOXES)
        after = run_python("print(6 * 7)", limits=QUICK)
        assert (after.status, after.stdout) == ("ok", "42\n")
        return

    def run_warm(code: str, **limits_kw) -> ExecResult:
        return warm.run(textwrap.dedent(code), limits=Limits(**{"timeout_s": 2.0, **limits_kw}))

    yield run_warm
    _assert_gone(OUR_SANDBOXES)
    assert_warm_healthy(warm)


# --------------------------------------------------------------------- semantics


def test_print_goes_to_stdout():
    result = run("print('hello')\nprint(1 + 1)")
    assert (result.status, result.stdout, result.stderr, result.error) == ("ok", "hello\n2\n", "", None)


def test_no_output_is_ok_with_empty_stdout():
    result = run("x = 3")
    assert (result.status, result.stdout, result.error) == ("ok", "", None)


def test_last_expression_is_not_printed():
    assert run("1 + 1").stdout == ""


def test_exception_gives_last_traceback_line():
    result = run("print('partial')\ny = x + 1")
    assert result.status == "error"
    assert result.error == "NameError: name 'x' is not defined"
    assert result.stdout == "partial\n"  # raw; dropping it is the caller's policy


def test_syntax_error_line():
    result = run("x = (1,")
    assert result.status == "error"
    assert result.error is not None and result.error.startswith("SyntaxError: ")


def test_name_is_not_main():
    assert run("print(__name__)").stdout == "builtins\n"


def test_no_future_flags_leak_into_the_code():
    # The runner uses `from __future__ import annotations`; the code must not inherit it.
    assert run("def f(x: int): pass\nprint(f.__annotations__)").stdout == "{'x': <class 'int'>}\n"


def test_unicode_output_and_stderr():
    result = run("import sys\nprint('π ≈ 3.14')\nprint('warn', file=sys.stderr)")
    assert (result.stdout, result.stderr) == ("π ≈ 3.14\n", "warn\n")


def test_no_state_between_calls():
    assert run("x = 1\nopen('f.txt', 'w').write('a')").status == "ok"
    second = run("import os\nprint(os.listdir('.'))\nprint(x)")
    assert second.stdout == "[]\n"
    assert second.error == "NameError: name 'x' is not defined"


def test_sympy_is_importable():
    result = run("import sympy\nprint(sympy.sqrt(8))", timeout_s=20)
    assert (result.status, result.stdout) == ("ok", "2*sqrt(2)\n")


def test_prelude_runs_first_in_the_same_namespace():
    result = run_python("print(math.factorial(5), value)", prelude="import math\nvalue = 7", limits=QUICK)
    assert (result.status, result.stdout) == ("ok", "120 7\n")


def test_system_exit_is_reported_like_the_reference():
    result = run("print('before')\nimport sys\nsys.exit(3)")
    assert (result.status, result.error, result.stdout) == ("error", "SystemExit: 3", "before\n")
    assert run("import sys; sys.exit()").error == "SystemExit"


def test_os_exit_without_report():
    result = run("import os; os._exit(3)")
    assert (result.status, result.error) == ("error", "Exited with code 3")


def test_fatal_signal():
    result = run("import ctypes; ctypes.string_at(0)")
    assert result.status == "error"
    assert result.error == "Killed by signal SIGSEGV"


def test_fork_copies_do_not_report_for_the_code():
    result = run(
        """
        import os
        pid = os.fork()
        if pid == 0:
            raise ValueError("in the copy")
        os.waitpid(pid, 0)
        print("original")
        """
    )
    assert (result.status, result.error) == ("ok", None)
    assert result.stdout.endswith("original\n")


def test_timeout_is_respected():
    start = time.monotonic()
    result = run("while True:\n    pass", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert (result.status, result.error) == ("timeout", None)
    assert 1.0 <= elapsed < 1.5


def test_sleeping_code_times_out():
    start = time.monotonic()
    assert run("import time; time.sleep(100)", timeout_s=0.5).status == "timeout"
    assert time.monotonic() - start < 1.0


def test_cpu_limit_counts_as_timeout():
    start = time.monotonic()
    result = run("while True:\n    pass", timeout_s=10.0, cpu_s=1.0)
    assert result.status == "timeout"
    assert time.monotonic() - start < 4.0  # SIGXCPU after 1 s of CPU, long before 10 s


def test_workdir_is_fresh_private_and_removed():
    result = run(
        """
        import os
        print(os.getcwd())
        print(os.listdir('.'))
        print(os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd())
        open('scratch.txt', 'w').write('data')
        """
    )
    cwd, listing, same = result.stdout.splitlines()
    assert (listing, same) == ("[]", "True")
    assert os.path.basename(cwd) == "work"
    assert not os.path.exists(cwd)
    assert not os.path.exists(os.path.dirname(cwd))


def test_output_cap_small():
    result = run("print('x' * 1000)", output_bytes=100)
    assert result.status == "output-limit"
    assert result.stdout == "x" * 100


def test_file_size_limit():
    result = run("open('big', 'wb').write(b'x' * 5 * 1024 * 1024)", file_size_mb=1)
    assert result.status == "error"
    assert result.error == "OSError: [Errno 27] File too large"


def test_bad_limits_and_interpreter_are_rejected():
    with pytest.raises(ValueError):
        run_python("pass", limits=Limits(timeout_s=0))
    with pytest.raises(SandboxError):
        run_python("pass", python="no-such-python-interpreter")


def test_traceback_shows_the_code_file_and_its_lines():
    result = run("def f(x):\n    return 1 / x\n\nprint('hi')\nf(0)\n")
    assert (result.status, result.error, result.stdout) == ("error", "ZeroDivisionError: division by zero", "hi\n")
    tb = result.traceback
    assert tb is not None and tb.startswith("Traceback (most recent call last):\n")
    assert f'  File "{sandbox.CODE_FILENAME}", line 5, in <module>\n    f(0)\n' in tb
    assert f'  File "{sandbox.CODE_FILENAME}", line 2, in f\n    return 1 / x\n' in tb
    assert tb.endswith("ZeroDivisionError: division by zero\n")
    assert tb.rstrip("\n").split("\n")[-1] == result.error
    assert RUNNER_DIR not in tb  # the sandbox's own frames are left out, like `python main.py`


def test_traceback_is_none_without_an_exception():
    assert run("print(1)").traceback is None
    assert run("while True:\n    pass", timeout_s=0.5).traceback is None
    assert run("import os; os._exit(3)").traceback is None


def test_syntax_error_traceback_is_the_compilers_report():
    result = run("x = 1\ny = (1,")
    assert result.error == "SyntaxError: '(' was never closed"  # unchanged
    assert result.traceback is not None
    assert result.traceback.startswith(f'  File "{sandbox.CODE_FILENAME}", line 2\n    y = (1,\n')
    assert result.traceback.endswith("SyntaxError: '(' was never closed\n")


def test_system_exit_traceback_and_error():
    result = run("import sys\nsys.exit(3)")
    assert result.error == "SystemExit: 3"
    assert result.traceback is not None and result.traceback.endswith("    sys.exit(3)\nSystemExit: 3\n")


def test_chained_exceptions_keep_error_as_the_last_line():
    result = run("""
        try:
            {}['k']
        except KeyError as exc:
            raise ValueError('bad\\nvalue') from exc
        """)
    assert result.error == "value"  # the last line, as the reference executor kept it
    assert result.traceback is not None
    assert "KeyError: 'k'" in result.traceback
    assert "The above exception was the direct cause of the following exception:" in result.traceback


def test_prelude_frames_show_their_lines():
    result = run_python("boom()", prelude="def boom():\n    raise RuntimeError('from prelude')", limits=QUICK)
    assert result.error == "RuntimeError: from prelude"
    assert result.traceback is not None
    assert '  File "<prelude>", line 2, in boom\n    raise RuntimeError(\'from prelude\')\n' in result.traceback


def test_huge_exception_messages_are_clipped():
    result = run("raise ValueError('x' * 10**6)")
    assert result.status == "error"
    assert result.error is not None and len(result.error) == 4003  # as before: head ... tail
    assert result.traceback is not None and len(result.traceback) == 20003
    assert result.traceback.startswith("Traceback (most recent call last):\n")
    assert result.traceback.endswith("x" * 100 + "\n")


def test_python_tool_passes_the_traceback_through():
    from mathsolve_python import PythonTool

    result = PythonTool().run("1 / 0", limits=QUICK)
    assert (result.status, result.error) == ("error", "ZeroDivisionError: division by zero")
    assert result.traceback is not None and f'File "{sandbox.CODE_FILENAME}", line 1' in result.traceback
    assert result.display is None


def test_protections_and_capabilities(caps):
    result = run("pass")
    for name in ("session-kill", "tmpdir", "minimal-env", "isolated-python", "rlimits"):
        assert name in result.protections
    assert set(result.protections) <= set(PROTECTIONS)
    assert caps["platform"] == sys.platform
    assert all(isinstance(caps[name], bool) for name in PROTECTIONS)
    assert caps["rlimits"] is True


# ------------------------------------------------------------------ adversarial


def test_infinite_loop(execute):
    assert execute("while True:\n    pass", timeout_s=1.0).status == "timeout"


def test_fork_bomb(execute, caps):
    if not (caps["cgroup-pids"] or caps["nproc"]):
        pytest.skip("no process cap on this machine (no writable pids cgroup, root without RLIMIT_NPROC)")
    start = time.monotonic()
    result = execute("import os\nwhile True:\n    os.fork()", timeout_s=2.0, memory_mb=512, processes=32)
    assert result.status in ("error", "timeout")
    assert time.monotonic() - start < 5.0


def test_huge_allocation_is_memory(execute):
    result = execute("data = bytearray(50 * 10**9)")
    assert (result.status, result.error) == ("memory", "MemoryError")


def test_gigabyte_of_output_is_cut_fast(execute):
    start = time.monotonic()
    result = execute("import sys\nchunk = 'x' * 10**6\nfor _ in range(1000):\n    sys.stdout.write(chunk)")
    assert result.status == "output-limit"
    assert len(result.stdout) == Limits().output_bytes
    assert time.monotonic() - start < 2.0


def test_network_is_unreachable(execute, caps):
    if not caps["netns"]:
        pytest.skip("the kernel refuses a network namespace here: network stays reachable")
    # Positive control: with network=True the same code reaches the listener.
    assert_unreachable(execute, control=lambda code: execute(code, network=True))


def assert_unreachable(execute, control=None) -> None:
    """``execute(code) -> ExecResult`` cannot reach a listener on this host's
    loopback; ``control``, an executor with ``network=True``, can."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
        blocked = execute(code)
        assert blocked.status == "error" and blocked.error is not None
        assert blocked.error.startswith("OSError") or "refused" in blocked.error
        with pytest.raises(BlockingIOError):
            server.accept()
        if control is not None:
            allowed = control(code)
            assert (allowed.status, allowed.stdout) == ("ok", "connected\n")


def test_writing_outside_the_workdir(execute, caps, tmp_path):
    if not caps["readonly-fs"]:
        pytest.skip("no mount namespace here: the code can write wherever the user can")
    # Outside /tmp: the host filesystem is mounted read-only inside the sandbox.
    host_target = Path(__file__).resolve().parent / f"escape-{uuid.uuid4().hex}.txt"
    try:
        result = execute(f"open({str(host_target)!r}, 'w').write('escaped')")
        assert result.status == "error"
        assert result.error is not None and "Read-only file system" in result.error
        assert not host_target.exists()
    finally:
        host_target.unlink(missing_ok=True)
    # Under /tmp: the sandbox has its own private /tmp, so nothing reaches the host's.
    tmp_target = tmp_path / "escape.txt"
    execute(f"import os\nos.makedirs({str(tmp_path)!r}, exist_ok=True)\nopen({str(tmp_target)!r}, 'w').write('x')")
    assert not tmp_target.exists()


def test_interpreter_living_under_tmp(tmp_path):
    """A venv under /tmp (common in CI) must not be hidden by the private /tmp."""
    if not str(tmp_path.resolve()).startswith("/tmp/"):
        pytest.skip("the temporary directory is not under /tmp here")
    venv_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv_dir)], check=True, timeout=60)
    site = venv_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "probe_module_under_tmp.py").write_text("VALUE = 42\n")
    # Imported only after the sandbox set-up: a tmpfs over /tmp would hide it by then.
    code = "import probe_module_under_tmp\nprint(probe_module_under_tmp.VALUE)"
    result = run_python(code, python=str(venv_dir / "bin" / "python"), limits=QUICK)
    assert (result.status, result.stdout) == ("ok", "42\n"), result.stderr


def test_tmp_is_private_but_writable(caps):
    if not caps["tmpfs-workdir"]:
        pytest.skip("no mount namespace here")
    if any(p.startswith("/tmp/") for p in (sys.prefix, os.path.abspath(__file__))):
        pytest.skip("this Python lives under /tmp, so the sandbox keeps the host /tmp (read-only)")
    name = f"/tmp/mathsolve-test-{uuid.uuid4().hex}"
    result = run(f"open({name!r}, 'w').write('x')\nprint(open({name!r}).read())")
    assert (result.status, result.stdout) == ("ok", "x\n")
    assert not os.path.exists(name)


def test_environment_secrets_are_not_visible(execute, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_value_456")
    result = execute("import os\nprint(dict(os.environ))")
    assert result.status == "ok"
    assert "secret_value" not in result.stdout
    allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TMPDIR", "TMP", "TEMP", "TZ",
               "LD_LIBRARY_PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONNOUSERSITE",
               "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "MPLBACKEND"}
    assert set(eval(result.stdout)) <= allowed


# What the sandboxed code must not reach: the runner's package (loaded under a private
# name), each of its modules by its own name, and mathsolve.
MATHSOLVE_DIR = os.path.dirname(os.path.realpath(mathsolve.__file__))
RUNNER_NAMES = ["_mathsolve_sandbox_runner", "_mathsolve_sandbox_runner.main", "mathsolve", "mathsolve.sandbox",
                *sorted(p.stem for p in Path(RUNNER_DIR).glob("*.py") if p.stem != "__init__")]
IMPORT_PROBE = textwrap.dedent(f"""
    import importlib, json, sys
    found = {{}}
    for name in {RUNNER_NAMES!r}:
        try:
            found[name] = getattr(importlib.import_module(name), "__file__", None) or "?"
        except ModuleNotFoundError:
            found[name] = None
    loaded = [name for name, module in list(sys.modules.items())
              if name != "__main__" and str(getattr(module, "__file__", None) or "").startswith({MATHSOLVE_DIR!r})]
    print(json.dumps({{"found": found, "path": sys.path, "loaded": loaded}}))
    """)


def assert_nothing_of_mathsolve_is_importable(stdout: str) -> None:
    """``stdout`` of IMPORT_PROBE: no runner module or mathsolve importable or loaded,
    and no folder of mathsolve on sys.path."""
    report = json.loads(stdout)
    assert {name: file for name, file in report["found"].items() if file is not None} == {}
    assert report["loaded"] == []
    entries = [os.path.realpath(entry) for entry in report["path"] if entry]
    assert [e for e in entries if e == MATHSOLVE_DIR or e.startswith(MATHSOLVE_DIR + os.sep)] == []
    # The folder holding mathsolve may be on sys.path only as a site directory (a regular
    # install, where the code's own libraries live too); a checkout never.
    assert PACKAGE_ROOT not in entries or Path(PACKAGE_ROOT).name in ("site-packages", "dist-packages")


def test_the_runner_and_mathsolve_cannot_be_imported(execute):
    result = execute(IMPORT_PROBE)
    assert result.status == "ok", result.traceback
    assert_nothing_of_mathsolve_is_importable(result.stdout)


def test_a_mathsolve_checkout_on_sys_path_is_taken_off(monkeypatch):
    """The runner's rule for sys.path entries (an old-style editable install puts the
    checkout itself there): inside mathsolve or the checkout holding it go, a site
    directory stays, even when it holds mathsolve (it holds the code's libraries too)."""
    import sysconfig

    from mathsolve.sandbox.runner import start  # internals: the entry script's rules

    site_dir = os.path.realpath(sysconfig.get_paths()["purelib"])
    assert start._of_mathsolve(RUNNER_DIR) and start._of_mathsolve(MATHSOLVE_DIR)
    assert start._of_mathsolve(PACKAGE_ROOT) == (Path(PACKAGE_ROOT).name not in ("site-packages", "dist-packages"))
    assert not start._of_mathsolve(site_dir)
    monkeypatch.setattr(start, "_MATHSOLVE", os.path.join(site_dir, "mathsolve"))  # a regular install
    assert not start._of_mathsolve(site_dir)
    assert start._of_mathsolve(os.path.join(site_dir, "mathsolve", "sandbox"))


def test_killing_the_parent(execute):
    me = os.getpid()
    result = execute("import os\nos.kill(os.getppid(), 9)\nimport time; time.sleep(1)")
    assert os.getpid() == me  # still here
    assert result.status in ("ok", "error")


def test_killing_the_own_process_group(execute):
    assert execute("import os\nos.kill(0, 9)").status in ("ok", "error")


def spawn_background(token: str) -> str:
    """Code that leaves three sleepers (``token`` in their command lines) behind and
    prints ``started``: one in its process group, one in a new session, one daemon."""
    return textwrap.dedent(f"""
        import os, subprocess, sys
        sleeper = [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}]
        subprocess.Popen(sleeper)                          # same process group
        subprocess.Popen(sleeper, start_new_session=True)  # escapes the process group
        if os.fork() == 0:                                 # classic daemon double fork
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, sleeper)
            os._exit(0)
        print('started')
        """)


def test_background_processes_are_gone(execute):
    token = f"bg-{uuid.uuid4().hex}"
    result = execute(spawn_background(token))
    assert (result.status, result.stdout) == ("ok", "started\n")
    _assert_gone(token.encode())


def test_background_process_of_timed_out_code_is_gone(execute):
    token = f"bg-{uuid.uuid4().hex}"
    code = f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {token!r}],
                         start_new_session=True)
        while True:
            pass
        """
    assert execute(code, timeout_s=1.0).status == "timeout"
    _assert_gone(token.encode())


def test_deep_recursion(execute):
    result = execute("def f(n):\n    return f(n + 1)\nf(0)")
    assert result.status == "error"
    assert result.error is not None and result.error.startswith("RecursionError: maximum recursion depth exceeded")


def test_input_gets_eof_promptly(execute):
    start = time.monotonic()
    result = execute("input('number? ')")
    assert (result.status, result.error) == ("error", "EOFError: EOF when reading a line")
    assert time.monotonic() - start < 1.5


@pytest.mark.skipif(not LINUX, reason="parent-death signal is Linux-only")
def test_sandbox_dies_with_a_killed_caller(healthy):
    """If the CLI is SIGKILLed mid-run, nobody enforces the timeout any more:
    the sandbox must go down with it."""
    kill_caller_midway("""
        from mathsolve.sandbox import Limits, run_python
        code = ("import subprocess, sys, time\\nsubprocess.Popen([sys.executable, '-c', "
                "'import time; time.sleep(60)', %r])\\ntime.sleep(60)" % TOKEN)
        run_python(code, limits=Limits(timeout_s=60))
        """)


def kill_caller_midway(script: str) -> None:
    """Run ``script`` in a caller process until a process with ``TOKEN`` (a name the
    script gets) in its command line exists, SIGKILL the caller, and check that
    nothing of its sandbox outlives it. TOKEN is assembled at run time: no command
    line but the one the sandboxed code starts ever holds it (a child of the caller
    shows the caller's command line until it execs)."""
    token = f"bg-{uuid.uuid4().hex}"
    prefix = f"import sys\nsys.path.insert(0, {PACKAGE_ROOT!r})\nTOKEN = {token[:6]!r} + {token[6:]!r}\n"
    caller = subprocess.Popen([sys.executable, "-c", prefix + textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 20
        while not _processes_with(token.encode()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _processes_with(token.encode()), "the sandboxed code never started"
    finally:
        caller.kill()
        caller.wait()
    _assert_gone(token.encode())
    prefixes = (f"mathsolve-sandbox-{caller.pid}-", f"mathsolve-warm-{caller.pid}-")
    for prefix in prefixes:
        _assert_gone(prefix.encode())
    # The killed caller could not remove its temporary directory and cgroup: do it here.
    for leftover in (p for prefix in prefixes for p in Path(tempfile.gettempdir()).glob(prefix + "*")):
        shutil.rmtree(leftover, ignore_errors=True)
    cgroups = pids_cgroup_parent() if LINUX else None
    for leftover in Path(cgroups).glob(f"mathsolve-sandbox-{caller.pid}-*") if cgroups else ():
        try:
            leftover.rmdir()
        except OSError:
            pass


# -------------------------------------------------- fallbacks without namespaces


@pytest.mark.skipif(not LINUX, reason="Linux-specific fallback paths")
def test_without_namespaces_background_processes_still_die(healthy, monkeypatch):
    """Machines that refuse namespaces: the supervisor, a child subreaper, must
    still find processes that left the session, at exit and on timeout."""
    monkeypatch.setattr(launch, "USE_NAMESPACES", False)
    token = f"bg-{uuid.uuid4().hex}"
    spawn = (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
             f"'import time; time.sleep(60)', {token!r}], start_new_session=True)\n")
    result = run(spawn + "print('ok')")
    assert "subreaper" in result.protections and "pidns" not in result.protections
    assert result.stdout == "ok\n"
    _assert_gone(token.encode())
    assert run(spawn + "while True:\n    pass", timeout_s=1.0).status == "timeout"
    _assert_gone(token.encode())
    assert run("x").error == "NameError: name 'x' is not defined"


def _interpreter_for_nobody() -> str | None:
    """An interpreter the unprivileged user can run (the venv may sit in a private home directory)."""
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not candidate:
            continue
        try:
            probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 8)"],
                                   user=65534, group=65534, extra_groups=[], capture_output=True,
                                   timeout=30, cwd="/")
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(not LINUX or os.geteuid() != 0, reason="needs root to impersonate an unprivileged user")
def test_unprivileged_user(healthy):
    """The common case for users: no root. Protections then come from a user namespace
    (where the kernel allows one) and RLIMIT_NPROC."""
    interpreter = _interpreter_for_nobody()
    if interpreter is None:
        pytest.skip("no Python interpreter readable by the unprivileged user")
    token = f"bg-{uuid.uuid4().hex}"
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {PACKAGE_ROOT!r})
        from mathsolve.sandbox import Limits, run_python
        quick = Limits(timeout_s=2.0, memory_mb=512, processes=32)
        background = ("import subprocess, sys\\n"
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', %r],"
                      " start_new_session=True)" % {token!r})
        out = {{}}
        for name, code in [('print', 'print(1)'),
                           ('fork_bomb', 'import os\\nwhile True:\\n    os.fork()'),
                           ('background', background)]:
            if name == 'fork_bomb' and not {{'nproc', 'cgroup-pids'}} & set(out['print'][2]):
                continue  # never run an uncapped fork bomb
            r = run_python(code, limits=quick)
            out[name] = [r.status, r.stdout, list(r.protections)]
        print(json.dumps(out))
        """)
    proc = subprocess.run([interpreter, "-c", script], user=65534, group=65534, extra_groups=[],
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["print"][:2] == ["ok", "1\n"]
    assert "nproc" in out["print"][2]  # never ignored for a non-root user on Linux
    if "fork_bomb" in out:
        assert out["fork_bomb"][0] in ("error", "timeout")
    assert out["background"][0] == "ok"
    _assert_gone(token.encode())
