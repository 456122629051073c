"""Running untrusted Python: compile and exec it in an empty namespace, with its
source registered for tracebacks, and report how it ended; tracebacks are those of
``python main.py``, without the runner's own frames.

Standard library only, Python 3.8+, like every module of the runner.
"""

from __future__ import annotations

import io
import linecache
import os
import sys
import traceback

from .kernel import EXIT_ERROR, EXIT_MEMORY, EXIT_OK, flush_stdio

# A pathological exception message must not flood the status pipe. Head and tail
# are kept so that a caller's own "first N + ... + last N" truncation is unchanged.
_ERROR_KEEP = 2000
_TRACEBACK_KEEP = 10000  # the same for the full traceback, per end

# Frames of the runner's files are the sandbox's, not the code's: tracebacks start below them.
_RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))


def _clip(text: str, keep: int) -> str:
    """Head and tail of an over-long text (the middle is what a reader needs least)."""
    return text if len(text) <= 2 * keep + 3 else text[:keep] + "..." + text[-keep:]


def last_traceback_line() -> str:
    """The last line of the formatted traceback, as the reference executor keeps it."""
    try:
        line = traceback.format_exc().split("\n")[-2]
    except BaseException:  # formatting itself can fail (e.g. out of memory)
        line = sys.exc_info()[0].__name__
    return _clip(line, _ERROR_KEEP)


def register_source(filename: str, source: str) -> None:
    """Let tracebacks (and ``inspect``) show the code's lines. linecache entries
    whose mtime is None are never dropped by ``checkcache()``."""
    lines = io.StringIO(source, newline=None).readlines()  # the compiler's line breaks
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)


def format_traceback(exc: BaseException, fallback: str, shown_as: dict | None = None) -> str:
    """``traceback.format_exc()`` as if the code had run as a script: the sandbox's
    own frames are left out, so a SyntaxError has no "Traceback" header (like
    ``python main.py``). ``shown_as`` renames code files (a session's cells) in the
    text, after their source lines have been looked up under their real names."""
    try:
        tb = exc.__traceback__
        while tb is not None and os.path.dirname(tb.tb_frame.f_code.co_filename) == _RUNNER_DIR:
            tb = tb.tb_next
        summary = traceback.TracebackException(type(exc), exc, tb)  # looks the lines up now
        if shown_as:
            _rename_files(summary, shown_as, set())
        text = "".join(summary.format())
    except BaseException:  # out of memory, pathological exception objects
        text = fallback + "\n"
    return _clip(text, _TRACEBACK_KEEP)


def _rename_files(summary, names: dict, seen: set) -> None:
    if summary is None or id(summary) in seen:
        return
    seen.add(id(summary))
    for frame in summary.stack:
        if frame.filename in names:
            frame.filename = names[frame.filename]
    if getattr(summary, "filename", None) in names:  # a SyntaxError's location
        summary.filename = names[summary.filename]
    for nested in (summary.__cause__, summary.__context__, *(getattr(summary, "exceptions", None) or ())):
        _rename_files(nested, names, seen)


def execute(prelude: str, code: str, filename: str) -> tuple[str, str | None, str | None]:
    """Run prelude then code in one fresh, EMPTY globals dict: (status, error, traceback).

    An empty dict (no ``__name__`` key) makes ``__name__`` resolve through the
    builtins to ``"builtins"``, as in the reference's exec-in-a-dict runtime.
    BaseException is caught on purpose, like the reference's bare ``except:``:
    ``sys.exit(3)`` gives status "error" with ``SystemExit: 3``.
    """
    namespace: dict = {}
    try:
        if prelude:
            register_source("<prelude>", prelude)
            exec(compile(prelude, "<prelude>", "exec", dont_inherit=True), namespace)
        register_source(filename, code)
        # dont_inherit: this file's __future__ imports must not leak into the code.
        exec(compile(code, filename, "exec", dont_inherit=True), namespace)
    except BaseException as exc:
        status = "memory" if isinstance(exc, MemoryError) else "error"
        error = last_traceback_line()
        return status, error, format_traceback(exc, error)
    return "ok", None, None


def report_and_exit(outcome: tuple, me: int, report) -> None:
    """After ``execute``: flush the code's output, ``report(result dict)``, exit with
    the matching code. Never returns."""
    status, error, tb = outcome
    flush_stdio()
    if os.getpid() == me:  # a copy made by os.fork() in the code must not report
        report({"status": status, "error": error, "traceback": tb})
    os._exit({"ok": EXIT_OK, "memory": EXIT_MEMORY}.get(status, EXIT_ERROR))
