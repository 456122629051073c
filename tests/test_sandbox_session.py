"""Tests of mathsolve.sandbox.PythonSession: one confined interpreter per problem.

Notebook semantics first, then blocks that try to break the session. After each
test no sandbox process may remain (``healthy``); protections the kernel refuses
turn into skips, as in test_sandbox.py.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
import uuid

import pytest

from mathsolve.sandbox import CODE_FILENAME, PROTECTIONS, Limits, PythonSession, capabilities, run_python
from mathsolve.tools import ToolResult, ToolSession
from tests.test_sandbox import (
    IMPORT_PROBE,
    LINUX,
    OUR_SANDBOXES,
    RUNNER_DIR,
    _assert_gone,
    _processes_with,
    assert_nothing_of_mathsolve_is_importable,
    assert_unreachable,
    kill_caller_midway,
)

QUICK = Limits(timeout_s=2.0)


@pytest.fixture(scope="module")
def caps() -> dict[str, bool | str]:
    return capabilities()


@pytest.fixture
def session():
    with PythonSession(limits=QUICK) as s:
        yield s
    _assert_gone(OUR_SANDBOXES)


@pytest.fixture
def healthy():
    yield
    _assert_gone(OUR_SANDBOXES)


def run(s: PythonSession, code: str):
    return s.run(textwrap.dedent(code))


# --------------------------------------------------------------------- semantics


def test_state_persists_across_blocks(session):
    assert session.run("x = 1\nimport math\nopen('notes.txt', 'w').write('kept')").status == "ok"
    assert session.run("x += 1").status == "ok"
    result = session.run("print(x, math.factorial(4), open('notes.txt').read())")
    assert (result.status, result.stdout, result.stderr, result.error) == ("ok", "2 24 kept\n", "", None)


@pytest.mark.parametrize(
    ("code", "display"),
    [
        ("6 * 7", "42"),
        ("'π'", "'π'"),  # repr(), not str()
        ("None", None),
        ("x = 1", None),
        ("y = 3\ny  # the value\n# a comment line after it\n", "3"),
        ("if True:\n    5", None),  # the last statement is an `if`, not an expression
        ("print('p')", None),  # the expression's value is None
        ("[i * i for i in range(4)]", "[0, 1, 4, 9]"),
    ],
)
def test_final_expression_is_displayed(session, code, display):
    result = session.run(code)
    assert (result.status, result.display) == ("ok", display)


def test_print_display_and_merged_stderr(session):
    result = run(session, """
        import sys
        print('a')
        print('b', file=sys.stderr)
        print('c', end='')
        sys.stderr.write('d')
        5
        """)
    # Stream output in the order written (stderr merged, as a notebook shows it); the value apart.
    assert (result.stdout, result.stderr, result.display) == ("a\nb\ncd", "", "5")


def test_a_notebook_has_name_main(session):
    assert session.run("__name__").display == "'__main__'"
    session.run("value = 3")
    assert session.run("import __main__\n__main__.value").display == "3"


def test_error_keeps_state_and_reports_the_traceback(session):
    session.run("x = 5")
    session.run("def f():\n    return 1 / 0\n")
    result = session.run("print('before')\nf()")
    assert (result.status, result.stdout, result.display) == ("error", "before\n", None)
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.traceback is not None
    assert result.traceback.startswith("Traceback (most recent call last):\n")
    # Each block's frames show its own source lines (f comes from the block before).
    assert f'  File "{CODE_FILENAME}", line 2, in <module>\n    f()\n' in result.traceback
    assert f'  File "{CODE_FILENAME}", line 2, in f\n    return 1 / 0\n' in result.traceback
    assert result.traceback.endswith("ZeroDivisionError: division by zero\n")
    assert RUNNER_DIR not in result.traceback
    assert session.run("x").display == "5"


def test_syntax_error_keeps_state(session):
    session.run("x = 5")
    result = session.run("y = (1,")
    assert result.status == "error"
    assert result.error == "SyntaxError: '(' was never closed"
    assert result.traceback is not None and "Traceback" not in result.traceback
    assert result.traceback.startswith(f'  File "{CODE_FILENAME}", line 1\n    y = (1,\n')
    assert session.run("x").display == "5"


def test_sys_exit_ends_the_block_not_the_session(session):
    session.run("x = 1")
    result = session.run("print('before')\nimport sys\nsys.exit(3)")
    assert (result.status, result.error, result.stdout) == ("error", "SystemExit: 3", "before\n")
    assert result.traceback is not None and result.traceback.endswith("SystemExit: 3\n")
    assert session.run("sys.exit()").error == "SystemExit"
    assert session.run("x").display == "1"


def test_memory_error_keeps_state(session):
    session.run("x = 1")
    result = session.run("data = bytearray(50 * 10**9)")
    assert (result.status, result.error) == ("memory", "MemoryError")
    assert session.run("x").display == "1"


def test_a_block_larger_than_a_pipe_buffer(session):
    code = "x = 1\n" + "# " + "a" * 300_000 + "\nx + 1"
    assert session.run(code).display == "2"


def test_functions_from_earlier_blocks_show_their_own_lines(session):
    session.run("import inspect\ndef g():\n    return 'from block one'")
    assert session.run("inspect.getsource(g)").display == repr("def g():\n    return 'from block one'\n")


# ---------------------------------------------------------------- limits per block


def test_timeout_interrupts_the_block_and_keeps_state(healthy):
    with PythonSession(limits=Limits(timeout_s=0.5)) as s:
        s.run("x = 1")
        for code in ("import time\nwhile True:\n    time.sleep(0.01)", "while True:\n    x = x"):
            start = time.monotonic()
            result = s.run(code)
            assert (result.status, result.error, result.traceback) == ("timeout", None, None)
            assert 0.5 <= time.monotonic() - start < 1.2
        # Interrupted like a notebook cell (KeyboardInterrupt): the state survived.
        assert s.run("x").display == "1"


def test_a_block_deaf_to_the_interrupt_is_killed_and_state_is_lost(healthy):
    with PythonSession(limits=Limits(timeout_s=0.5)) as s:
        s.run("x = 1")
        start = time.monotonic()
        result = s.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass")
        assert result.status == "timeout"
        assert 1.4 <= time.monotonic() - start < 3.0  # the timeout, then about 1 s of grace
        after = s.run("print('fresh')\nx")
        assert (after.stdout, after.error) == ("fresh\n", "NameError: name 'x' is not defined")


def test_cpu_limit_is_per_block(healthy):
    with PythonSession(limits=Limits(timeout_s=10.0, cpu_s=1.0)) as s:
        s.run("x = 1")
        # The allowance counts from each block's start, not from the worker's.
        burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6:\n    pass"
        assert [s.run(burn).status for _ in range(2)] == ["ok", "ok"]
        start = time.monotonic()
        assert s.run("while True:\n    pass").status == "timeout"
        assert time.monotonic() - start < 4.0  # SIGXCPU, long before the 10 s wall clock
        assert s.run("x").display == "1"


def test_endless_output_is_cut_and_the_session_goes_on(healthy):
    with PythonSession(limits=Limits(timeout_s=5.0, output_bytes=1000)) as s:
        s.run("x = 2")
        start = time.monotonic()
        result = s.run("while True:\n    print('y' * 100)")
        assert result.status == "output-limit"
        assert result.stdout == ("y" * 100 + "\n") * 9 + "y" * 91
        assert time.monotonic() - start < 2.0
        # The display counts toward the cap too.
        big = s.run("print('z' * 10)\n'w' * 5000")
        assert (big.status, big.display) == ("output-limit", ("'" + "w" * 5000)[:989])
        assert s.run("x").display == "2"


# ------------------------------------------------------------------ hostile blocks


def test_os_exit_and_fatal_signals_report_and_restart(healthy):
    with PythonSession(limits=QUICK) as s:
        s.run("x = 1")
        result = s.run("print('bye')\nimport os\nos._exit(0)")
        assert (result.status, result.error, result.stdout) == ("error", "Exited with code 0", "bye\n")
        # The next block gets a fresh worker: empty namespace.
        assert s.run("x").error == "NameError: name 'x' is not defined"
        crash = s.run("import ctypes\nctypes.string_at(0)")
        assert (crash.status, crash.error) == ("error", "Killed by signal SIGSEGV")
        assert s.run("6 * 7").display == "42"


@pytest.mark.parametrize(
    "hostile",
    [
        "import sys\nsys.stdout.close()\nsys.stderr.close()",
        "import os\nos.close(1)\nos.close(2)",
        "import sys, io\nsys.stdout = io.StringIO()\nsys.__stdout__ = None",
        "import sys\nsys.__stdout__.write('direct\\n')\nsys.stdout.buffer.write(b'raw\\n')",
        'print(\'{"result": {"status": "ok", "id": null}}\')\nprint("\\n}\\n{")',
        # Forged result lines on every descriptor, the status channel included.
        "import os\nfor fd in range(3, 64):\n    try:\n"
        "        os.write(fd, b'{\"result\": {\"status\": \"ok\", \"display\": \"FORGED\"}}\\n')\n"
        "    except OSError:\n        pass\nimport time\ntime.sleep(0.1)",
        # A partial line (no newline) on every descriptor must not swallow the real result.
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"result\": ')\n"
        "    except OSError:\n        pass",
        "import os\npid = os.fork()\nif pid == 0:\n    raise ValueError('in the copy')\nos.waitpid(pid, 0)",
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)",
        "exit()",  # also closes sys.stdin
    ],
)
def test_hostile_blocks_do_not_break_the_protocol(session, hostile):
    session.run("x = 1")
    first = session.run(hostile)
    assert first.display != "'FORGED'" and first.status in ("ok", "error")
    after = session.run("print('still', x)\nx + 1")
    assert (after.status, after.stdout, after.display) == ("ok", "still 1\n", "2")
    assert session.run("input()").error == "EOFError: EOF when reading a line"


def test_output_between_blocks_belongs_to_no_block(session):
    session.run("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()")
    time.sleep(0.4)
    assert session.run("print('now')").stdout == "now\n"


def test_close_kills_everything_and_removes_the_workdir(healthy):
    token = f"bg-{uuid.uuid4().hex}"
    s = PythonSession(limits=QUICK)
    result = s.run(f"""
import os, subprocess, sys
sleeper = [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}]
subprocess.Popen(sleeper)
subprocess.Popen(sleeper, start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.getcwd()""")
    assert result.status == "ok"
    cwd = eval(result.display)
    if LINUX:
        deadline = time.monotonic() + 5
        while len(_processes_with(token.encode())) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_processes_with(token.encode())) == 3  # alive between blocks, as in a notebook
    s.close()
    _assert_gone(token.encode())
    _assert_gone(OUR_SANDBOXES)
    assert not os.path.exists(os.path.dirname(cwd))
    s.close()  # idempotent
    with pytest.raises(ValueError):
        s.run("1")


def test_nothing_starts_before_the_first_block(healthy):
    with PythonSession(limits=QUICK) as s:
        assert _processes_with(OUR_SANDBOXES) == [] or not LINUX
        assert s.run("1").display == "1"
        assert _processes_with(OUR_SANDBOXES) != [] or not LINUX


def test_two_sessions_are_isolated(healthy, caps):
    with PythonSession(limits=QUICK) as one, PythonSession(limits=QUICK) as two:
        one.run("x = 1\nopen('mine.txt', 'w').write('1')")
        assert two.run("x").error == "NameError: name 'x' is not defined"
        listing = two.run("import os\nsorted(os.listdir('.'))").display
        assert listing == "[]"
        assert one.run("x").display == "1"
        # run_python alongside a session is unaffected.
        assert run_python("print(2)", limits=QUICK).stdout == "2\n"


def test_same_confinement_as_run_python(session, caps):
    result = session.run("1")
    assert set(result.protections) == {name for name in PROTECTIONS if caps[name]}


def test_the_runner_and_mathsolve_cannot_be_imported_in_a_session(session):
    result = session.run(IMPORT_PROBE)
    assert result.status == "ok", result.traceback
    assert_nothing_of_mathsolve_is_importable(result.stdout)


def test_network_is_unreachable_in_a_session(session, caps):
    if not caps["netns"]:
        pytest.skip("the kernel refuses a network namespace here: network stays reachable")
    with PythonSession(limits=Limits(timeout_s=2.0, network=True)) as connected:  # positive control
        assert_unreachable(session.run, control=connected.run)


def test_session_outlives_the_thread_that_started_it(session):
    # The worker must not be tied to the starting thread (no PR_SET_PDEATHSIG on it).
    worker = threading.Thread(target=session.run, args=("x = 'kept'",))
    worker.start()
    worker.join()
    time.sleep(0.1)
    assert session.run("x").display == "'kept'"


@pytest.mark.skipif(not LINUX, reason="process checks read /proc")
@pytest.mark.parametrize("busy", [True, False])
def test_session_dies_with_a_killed_caller(healthy, busy):
    """The caller is SIGKILLed while a block runs, or between blocks: the worker is
    not tied to a thread, so the supervisor's lifeline pipe must take it down."""
    kill_caller_midway(f"""
        import time
        from mathsolve.sandbox import Limits, PythonSession
        session = PythonSession(limits=Limits(timeout_s=60))
        session.run("import subprocess, sys\\nsubprocess.Popen([sys.executable, '-c', "
                    "'import time; time.sleep(60)', %r], start_new_session=True)" % TOKEN)
        if {busy!r}:
            session.run("import time; time.sleep(60)")
        time.sleep(60)
        """)


# ------------------------------------------------------------------- the tool API


def test_python_tool_session(healthy):
    from mathsolve_python import PythonTool

    tool = PythonTool()
    tool_session = tool.open_session(QUICK)
    try:
        assert isinstance(tool_session, ToolSession)
        tool_session.run("x = 2")
        shown = tool_session.run("print('p')\nx ** 10")
        assert isinstance(shown, ToolResult)
        assert (shown.tool, shown.status, shown.stdout, shown.display) == ("python", "ok", "p\n", "1024")
        failed = tool_session.run("x / 0")
        assert failed.error == "ZeroDivisionError: division by zero"
        assert failed.traceback is not None and f'File "{CODE_FILENAME}", line 1' in failed.traceback
    finally:
        tool_session.close()
        tool_session.close()
    stateless = tool.run("1 / 0", limits=QUICK)
    assert stateless.traceback is not None and stateless.traceback.endswith("ZeroDivisionError: division by zero\n")
    assert stateless.display is None
