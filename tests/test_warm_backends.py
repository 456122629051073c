"""Tests of the warm backends: mathsolve.sandbox.WarmPython and the `sympy` and
`numeric` tool plugins built on it.

The yardstick is fidelity: a block run in a fork of a warm zygote must give what a
fresh ``run_python`` gives (status, stdout, stderr, error, traceback; timing aside),
and blocks must not see each other (files, processes, random state). The
adversarial cases run against WarmPython in test_sandbox.py (``execute`` fixture).
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mathsolve.formats.tora import ToraProtocol
from mathsolve.sandbox import Limits, SandboxError, WarmPool, WarmPython, run_python
from mathsolve.sandbox import launch  # internals: the no-namespaces switch
from mathsolve.tools import ToolResult
from tests.test_sandbox import (
    IMPORT_PROBE,
    LINUX,
    OUR_SANDBOXES,
    _assert_gone,
    assert_nothing_of_mathsolve_is_importable,
    close_warm,
    kill_caller_midway,
    spawn_background,
    zygote_processes,
)

QUICK = Limits(timeout_s=5.0)
SHARED = Path(__file__).resolve().parents[2] / "shared"
TORA_GSM8K = SHARED / "data" / "replay" / "tora-code-34b-v1.0.gsm8k.jsonl"


@pytest.fixture(scope="module")
def warm():
    """A zygote like the `sympy` tool's (same preload), of the module's own."""
    from mathsolve_sympy import PRELOAD

    backend = WarmPython(PRELOAD)
    yield backend
    close_warm(backend)


def warm_run(backend: WarmPython, code: str, **limits_kw):
    return backend.run(textwrap.dedent(code), limits=Limits(**{"timeout_s": 5.0, **limits_kw}))


# ----------------------------------------------------------------------- fidelity

FIDELITY_BLOCKS = {
    "print": "print('hello')\nprint(1 + 1)",
    "nothing printed": "x = 3",
    "last expression not printed": "1 + 1",
    "error after output": "print('partial')\ny = x + 1",
    "error in a function": "def f(x):\n    return 1 / x\n\nprint('hi')\nf(0)\n",
    "syntax error": "x = 1\ny = (1,",
    "sys.exit(3)": "print('before')\nimport sys\nsys.exit(3)",
    "sys.exit()": "import sys; sys.exit()",
    "os._exit": "import os; os._exit(3)",
    "fatal signal": "import ctypes; ctypes.string_at(0)",
    "__name__": "print(__name__)",
    "clean namespace": "print('sympy' not in globals(), sorted(dir()), sorted(globals()))",
    "no future flags": "def f(x: int): pass\nprint(f.__annotations__)",
    "stderr apart": "import sys\nprint('π ≈ 3.14')\nprint('warn', file=sys.stderr)",
    "a warning": "import warnings\nwarnings.warn('careful')\nprint('after')",
    "argv and cwd": "import os, sys\nprint(sys.argv, os.path.basename(os.getcwd()), os.listdir('.'))",
    "home and tmpdir": "import os\nprint(os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd())",
    "input": "input('number? ')",
    "chained": "try:\n    {}['k']\nexcept KeyError as exc:\n    raise ValueError('bad\\nvalue') from exc",
    "sympy": "from sympy import symbols, solve, Rational\nx = symbols('x')\nprint(solve(x**2 - 4, x), Rational(3, 6))",
    "sympy error": "from sympy import sympify\nsympify('2 +* 3')",
    "sympy calculus": "from sympy import *\nx = symbols('x')\n"
                      "print(limit(sin(x) / x, x, 0), integrate(x**2 * exp(x), x),"
                      " summation(1 / x**2, (x, 1, oo)), series(exp(x), x, 0, 4))",
    "sympy simplify": "from sympy import *\nx = symbols('x')\n"
                      "print(simplify(sin(x)**2 + cos(x)**2), nsimplify(0.125),"
                      " latex(x**2 / 3), solveset(x**2 - 4 > 0, x, S.Reals))",
    "sympy stats": "from sympy.stats import Die, E, P\nd = Die('d', 6)\nprint(E(d), P(d > 3))",
    "sympy printing": "from sympy import *\nx = symbols('x')\n"
                      "print(pretty(Integral(sqrt(x), x)), Matrix([[1, 2], [3, 4]]).inv())",
    "recursion": "def f(n):\n    return f(n + 1)\nf(0)",
    "memory": "data = bytearray(50 * 10**9)",
    "int digits": "print(len(str(10 ** 5000)))",
    "recursion limit": "import sys\nprint(sys.getrecursionlimit())",
    "fork copy": "import os\npid = os.fork()\nif pid == 0:\n    raise ValueError('in the copy')\n"
                 "os.waitpid(pid, 0)\nprint('original')",
}


@pytest.mark.parametrize("name", list(FIDELITY_BLOCKS))
def test_a_warm_block_gives_what_a_fresh_interpreter_gives(warm, name):
    code = FIDELITY_BLOCKS[name]
    cold = run_python(code, limits=QUICK)
    hot = warm.run(code, limits=QUICK)
    assert (hot.status, hot.stdout, hot.stderr, hot.error, hot.traceback) == \
        (cold.status, cold.stdout, cold.stderr, cold.error, cold.traceback)
    assert hot.display is None
    assert hot.protections == cold.protections
    # What the model reads is therefore the same too.
    as_tool = [ToolResult(tool="t", status=r.status, stdout=r.stdout, error=r.error) for r in (cold, hot)]
    assert ToraProtocol().observation(as_tool[0]) == ToraProtocol().observation(as_tool[1])


def test_prelude_runs_first_in_the_same_namespace(warm):
    result = warm.run("print(math.factorial(5), value)", prelude="import math\nvalue = 7", limits=QUICK)
    assert (result.status, result.stdout) == ("ok", "120 7\n")
    assert warm.run("print(value)", limits=QUICK).error == "NameError: name 'value' is not defined"


def test_sympy_is_preloaded_and_blocks_are_fast(warm):
    from mathsolve_sympy import PRELOAD

    warm.run("pass", limits=QUICK)
    assert warm.preloaded == PRELOAD  # every name of the plugin's list exists and imports
    # The documented difference: the preloaded modules are already in sys.modules.
    assert warm.run("import sys\nprint('sympy' in sys.modules)", limits=QUICK).stdout == "True\n"
    start = time.monotonic()
    for _ in range(5):
        assert warm.run("import sympy\nprint(sympy.sqrt(8))", limits=QUICK).stdout == "2*sqrt(2)\n"
    assert (time.monotonic() - start) / 5 < 0.15  # a cold `import sympy` alone costs 0.3 s or more


# ---------------------------------------------------------------------- isolation


def test_the_runner_and_mathsolve_cannot_be_imported_after_the_preload(warm):
    result = warm_run(warm, IMPORT_PROBE)
    assert result.status == "ok", result.traceback
    assert_nothing_of_mathsolve_is_importable(result.stdout)


def test_state_does_not_carry_over(warm):
    first = warm_run(warm, "x = 1\nimport builtins, sympy\nbuiltins.leak = 1\nsympy.leak = 2\nsympy.sqrt = None")
    assert first.status == "ok"
    second = warm_run(warm, "import builtins, sympy\nprint(hasattr(builtins, 'leak'), hasattr(sympy, 'leak'), "
                            "sympy.sqrt(4))\nprint(x)")
    assert (second.stdout, second.error) == ("False False 2\n", "NameError: name 'x' is not defined")


def test_random_state_differs_between_blocks(warm):
    code = """
        import random
        from sympy.core.random import rng
        from sympy import randprime
        print(random.random(), random.getrandbits(64), rng.random(), randprime(10**12, 10**13))
        """
    outputs = {warm_run(warm, code).stdout for _ in range(3)}
    assert len(outputs) == 3
    values = [line.split() for line in outputs]
    for column in range(4):  # each generator on its own, not only one of them
        assert len({v[column] for v in values}) == 3


def test_numpy_legacy_random_state_differs_between_blocks():
    pytest.importorskip("numpy")
    with WarmPython(("numpy",)) as backend:
        code = "import numpy\nprint(numpy.random.rand(), numpy.random.randint(10**9))"
        outputs = {backend.run(code, limits=QUICK).stdout for _ in range(3)}
    assert len(outputs) == 3


def test_files_of_one_block_are_gone_in_the_next(warm):
    first = warm_run(warm, """
        import os
        open('here.txt', 'w').write('block one')
        os.mkdir('sub')
        os.chmod('sub', 0)  # even an unreadable directory
        for scratch in ('/tmp', '/dev/shm'):
            if os.access(scratch, os.W_OK):
                open(os.path.join(scratch, 'there.txt'), 'w').write('block one')
        os.chmod('.', 0o500)  # and a read-only work dir
        print(sorted(os.listdir('.')))
        """)
    assert (first.status, first.stdout) == ("ok", "['here.txt', 'sub']\n")
    second = warm_run(warm, """
        import os
        print(os.listdir('.'), os.access('.', os.W_OK))
        print([name for d in ('/tmp', '/dev/shm') if os.path.isdir(d) for name in os.listdir(d) if 'there' in name])
        """)
    assert (second.status, second.stdout) == ("ok", "[] True\n[]\n")


def test_a_moved_work_dir_is_made_again(warm, caps_warm):
    if "tmpfs-workdir" not in caps_warm:
        pytest.skip("no private work dir here")
    moved = warm_run(warm, """
        import os
        here = os.getcwd()
        os.chdir('/')
        try:
            os.rename(here, here + '-moved')
            open(here + '-moved/kept', 'w').write('x')
        except OSError:
            pass  # a mount point cannot move
        """)
    assert moved.status == "ok"
    after = warm_run(warm, "import os\nprint(os.path.basename(os.getcwd()), os.listdir('.'), "
                           "sorted(os.listdir('..')))")
    assert after.stdout == "work [] ['work']\n"


@pytest.fixture(scope="module")
def caps_warm(warm) -> tuple[str, ...]:
    return warm.run("pass", limits=QUICK).protections


def test_sysv_shared_memory_does_not_carry_over(warm, caps_warm):
    if "ipcns" not in caps_warm:
        pytest.skip("no private IPC namespace here: the host's objects must be left alone")
    shm = "import ctypes\nlibc = ctypes.CDLL(None)\nprint(libc.shmget(0x5EED, 4096, {flags}) >= 0)"
    assert warm_run(warm, shm.format(flags="0o1600")).stdout == "True\n"  # IPC_CREAT
    assert warm_run(warm, shm.format(flags="0o600")).stdout == "False\n"  # no longer there


@pytest.mark.skipif(not LINUX, reason="process listing through /proc")
def test_background_process_of_one_block_is_gone_in_the_next(warm):
    token = f"bg-{uuid.uuid4().hex}"
    started = warm_run(warm, spawn_background(token))
    assert (started.status, started.stdout) == ("ok", "started\n")
    _assert_gone(token.encode())
    # Seen from inside the next block too: nothing but the sandbox's own processes.
    check = warm_run(warm, f"""
        import os
        found = []
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                found.append(open('/proc/%s/cmdline' % pid, 'rb').read())
            except OSError:
                pass
        print(any({token!r}.encode() in line for line in found))
        """)
    assert check.stdout == "False\n"
    assert len(zygote_processes(warm)) == 3


@pytest.mark.skipif(not LINUX, reason="Linux-specific fallback paths")
def test_without_namespaces_the_zygote_still_sweeps_and_cleans(monkeypatch):
    """Machines that refuse namespaces: the zygote, a child subreaper, still finds
    what a block left behind, and cleans the (host) temporary directory."""
    monkeypatch.setattr(launch, "USE_NAMESPACES", False)
    backend = WarmPython()
    token = f"bg-{uuid.uuid4().hex}"
    result = warm_run(backend, spawn_background(token) + "open('left.txt', 'w').write('x')\n")
    assert "subreaper" in result.protections and "pidns" not in result.protections
    assert result.stdout == "started\n"
    _assert_gone(token.encode())
    after = warm_run(backend, "import os\nprint(os.listdir('.'), os.listdir('..'))")
    assert after.stdout == "[] ['work']\n"
    timed_out = warm_run(backend, spawn_background(token) + "while True:\n    pass", timeout_s=1.0)
    assert timed_out.status == "timeout"
    _assert_gone(token.encode())
    assert len(zygote_processes(backend)) == 3
    close_warm(backend)


@pytest.mark.skipif(not LINUX, reason="process listing through /proc")
def test_output_of_a_background_process_never_reaches_the_next_block(warm):
    code = """
        import subprocess, sys
        subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True:\\n    print("noise", flush=True)\\n'
                          '    time.sleep(0.001)'], start_new_session=True)
        import time; time.sleep(0.2)
        """
    assert warm_run(warm, code).status == "ok"
    for _ in range(3):
        assert warm_run(warm, "print('clean')").stdout == "clean\n"


# ---------------------------------------------------------------- limits and life


def test_memory_limit_is_on_top_of_the_zygote(warm):
    # The zygote (interpreter + sympy) maps far more than 64 MB: the block still runs.
    ok = warm_run(warm, "data = bytearray(32 * 2**20)\nprint(len(data))", memory_mb=64)
    assert (ok.status, ok.stdout) == ("ok", f"{32 * 2**20}\n")
    over = warm_run(warm, "data = bytearray(200 * 2**20)", memory_mb=64)
    assert (over.status, over.error) == ("memory", "MemoryError")


def test_cpu_limit_is_the_blocks_own(warm):
    start = time.monotonic()
    assert warm_run(warm, "while True:\n    pass", timeout_s=10.0, cpu_s=1.0).status == "timeout"
    assert time.monotonic() - start < 4.0  # SIGXCPU, long before the 10 s wall clock
    # The zygote's own CPU time (imports, forks) never counts against a block.
    assert warm_run(warm, "print('next')", cpu_s=1.0).stdout == "next\n"


def test_timeout_and_output_cap_keep_the_zygote(warm):
    zygote = warm_run(warm, "import os\nprint(os.getppid())").stdout
    start = time.monotonic()
    assert warm_run(warm, "while True:\n    pass", timeout_s=0.5).status == "timeout"
    assert time.monotonic() - start < 1.5
    capped = warm_run(warm, "while True:\n    print('y' * 100)", output_bytes=1000)
    assert (capped.status, capped.stdout) == ("output-limit", ("y" * 100 + "\n") * 9 + "y" * 91)
    assert warm_run(warm, "import os\nprint(os.getppid())").stdout == zygote


def test_killing_the_zygote_gives_a_status_and_a_new_zygote(warm):
    cold = run_python("import os\nos.kill(os.getppid(), 9)\nimport time; time.sleep(1)", limits=QUICK)
    hot = warm_run(warm, "import os\nos.kill(os.getppid(), 9)\nimport time; time.sleep(1)")
    assert (hot.status, hot.error) == (cold.status, cold.error) == ("error", "Killed by signal SIGKILL")
    after = warm_run(warm, "import sympy\nprint(sympy.Integer(6) * 7)")
    assert (after.status, after.stdout) == ("ok", "42\n")
    assert warm.preloaded is not None and warm.preloaded[0] == "sympy"


def test_a_stopped_zygote_is_replaced():
    backend = WarmPython()  # no preload: the replacement starts fast
    result = warm_run(backend, "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nprint('stopped')",
                      timeout_s=0.3)
    assert result.status == "timeout"  # the kill request went unanswered: the zygote was killed
    assert warm_run(backend, "print('next')").stdout == "next\n"
    close_warm(backend)


def test_signals_to_the_zygote_are_ignored(warm):
    zygote = warm_run(warm, "import os\nprint(os.getppid())").stdout
    result = warm_run(warm, "import os, signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, "
                            "signal.SIGUSR1, signal.SIGALRM):\n    os.kill(os.getppid(), s)\nprint('sent')")
    assert (result.status, result.stdout) == ("ok", "sent\n")
    assert warm_run(warm, "import os\nprint(os.getppid())").stdout == zygote
    # ... while the block itself has the interpreter's own handlers back.
    own = warm_run(warm, "import signal\nprint(signal.getsignal(signal.SIGINT) is signal.default_int_handler, "
                         "signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)")
    assert own.stdout == "True True\n"


def test_concurrent_callers_are_serialized(warm):
    results: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = warm_run(warm, f"import sympy\nprint(sympy.Integer({i}) ** 2)").stdout

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: f"{i * i}\n" for i in range(6)}


def test_a_pool_runs_concurrent_blocks_at_once_and_one_thread_keeps_one_zygote():
    """WarmPool, what the tool plugins use: blocks from threads do not queue behind
    each other (a WarmPython serializes them), and sequential use never starts a second
    zygote."""
    pool = WarmPool()
    for i in range(3):
        assert pool.run(f"print({i})", limits=QUICK).stdout == f"{i}\n"
    assert pool.size == 1 and pool.preloaded == ()
    results: dict[int, str] = {}

    def call(i: int) -> None:
        results[i] = pool.run(f"import time\ntime.sleep(1.0)\nprint({i})", limits=QUICK).stdout

    started = time.monotonic()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == {i: f"{i}\n" for i in range(3)}
    assert pool.size == 3
    assert elapsed < 2.5, f"3 one-second blocks took {elapsed:.2f} s: they were serialized"
    members = list(pool._members)
    for member in members:
        close_warm(member)  # every zygote's processes go (close_warm checks)
    pool.close()
    with pytest.raises(ValueError):
        pool.run("pass")


def test_the_python_backend_forks_plain_blocks_with_run_pythons_results():
    from mathsolve_python import PythonTool

    code = "import sys\nprint(sorted(globals()), __name__)\nprint('x', file=sys.stderr)\n1 / 0"
    forked = PythonTool().run(code, limits=QUICK)
    cold = ToolResult.from_exec("python", run_python(code, limits=QUICK))
    keys = ("status", "stdout", "stderr", "error", "traceback")
    assert {k: getattr(forked, k) for k in keys} == {k: getattr(cold, k) for k in keys}
    assert forked.status == "error" and forked.error == "ZeroDivisionError: division by zero"


def test_a_missing_preload_module_runs_cold():
    with WarmPython(("no_such_module_here", "json")) as backend:
        result = backend.run("import no_such_module_here", limits=QUICK)
        assert result.error == "ModuleNotFoundError: No module named 'no_such_module_here'"
        assert backend.preloaded == ("json",)


def test_bad_arguments_and_closing():
    with pytest.raises(ValueError):
        WarmPython(("not a module",))
    with pytest.raises(SandboxError):
        WarmPython(python="no-such-python-interpreter")
    backend = WarmPython()
    with pytest.raises(ValueError):
        backend.run("pass", limits=Limits(timeout_s=0))
    assert backend.run("print(1)", limits=QUICK).stdout == "1\n"
    close_warm(backend)
    backend.close()
    with pytest.raises(ValueError):
        backend.run("pass")


@pytest.mark.skipif(not LINUX, reason="parent-death handling is checked through /proc")
def test_zygote_dies_with_a_killed_caller():
    kill_caller_midway("""
        from mathsolve.sandbox import Limits, WarmPython
        backend = WarmPython(("json",))
        backend.run("print(1)")
        code = ("import subprocess, sys, time\\nsubprocess.Popen([sys.executable, '-c', "
                "'import time; time.sleep(60)', %r], start_new_session=True)\\ntime.sleep(60)" % TOKEN)
        backend.run(code, limits=Limits(timeout_s=60))
        """)
    _assert_gone(OUR_SANDBOXES)


# --------------------------------------------------------------------- the plugins


def test_the_tools_are_registered_with_their_warm_imports():
    from mathsolve import registry

    tools = registry.tools()
    assert tools["sympy"].imports == ("sympy",)
    numeric = tools["numeric"]
    assert "mpmath" in numeric.imports
    assert set(numeric.imports) <= {"numpy", "mpmath"}
    result = tools["sympy"].run("import sympy\nprint(sympy.factorint(360))", limits=QUICK)
    assert (result.tool, result.status, result.stdout) == ("sympy", "ok", "{2: 3, 3: 2, 5: 1}\n")
    import mathsolve_numeric

    result = numeric.run("import mpmath\nmpmath.mp.dps = 20\nprint(mpmath.pi)\n1/0", limits=QUICK)
    assert mathsolve_numeric._pool().preloaded == mathsolve_numeric.PRELOAD
    assert (result.tool, result.status, result.stdout) == ("numeric", "error", "3.1415926535897932385\n")
    assert result.error == "ZeroDivisionError: division by zero"
    assert result.traceback is not None and 'File "main.py", line 4' in result.traceback


def test_numeric_loads_and_says_so_without_numpy(monkeypatch):
    import importlib.util

    import mathsolve_numeric

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numpy" else real(name, *a))
    try:
        module = importlib.reload(mathsolve_numeric)
        tool = module.NumericTool()
        assert tool.imports == ("mpmath",)
        assert "numpy not installed" in tool.description
        result = tool.run("import mpmath\nprint(mpmath.mpf(2) ** 10)", limits=QUICK)
        assert (result.status, result.stdout) == ("ok", "1024.0\n")
        module._pool().close()
    finally:
        monkeypatch.undo()
        importlib.reload(mathsolve_numeric)


def test_replay_with_the_sympy_tool_matches_as_python_does():
    """The first released ToRA-Code-34B GSM8K solutions, once per backend (the whole
    file matches 1318 of 1318 blocks with either: docs/sandbox.md, "Warm backends")."""
    if not TORA_GSM8K.exists():
        pytest.skip(f"shared data not found at {TORA_GSM8K} (the shared folder sits beside the checkout)")
    from mathsolve.cli import app

    summaries = {}
    for tool in ("python", "sympy"):
        r = CliRunner().invoke(app, ["replay", str(TORA_GSM8K), "--limit", "20", "--tool", tool, "--json"])
        assert r.exit_code == 0, r.output
        summaries[tool] = json.loads(r.stdout)
    assert summaries["python"]["blocks"] == 20
    assert summaries["sympy"]["matched"] == summaries["python"]["matched"]
    assert summaries["python"]["matched"] >= 19


@pytest.mark.skipif(sys.platform != "linux", reason="Linux confinement")
def test_blocks_cannot_forge_the_end_of_a_block(warm):
    """The zygote's status descriptor is closed in the block, and /proc cannot reopen
    it (supervisor, init and zygote are not dumpable): a forged result line changes
    nothing."""
    code = """
        import os
        forged = 0
        for pid in filter(str.isdigit, os.listdir('/proc')):
            if int(pid) == os.getpid():
                continue  # its own result pipe: the block may lie about itself, as in run_python
            for fd in range(3, 16):
                try:
                    with open('/proc/%s/fd/%d' % (pid, fd), 'w') as fh:
                        fh.write('{"result": {"id": "x", "status": "ok"}}\\n')
                    forged += 1
                except OSError:
                    pass
        print(forged)
        """
    result = warm_run(warm, code)
    assert (result.status, result.stdout) == ("ok", "0\n")
    assert warm_run(warm, "print('next')").stdout == "next\n"
