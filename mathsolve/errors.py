"""Errors a user can meet, each with a one-line message and a documented exit code.

The CLI prints `error: <message>` on stderr and exits with `exit_code`; it never
shows a traceback for these. The codes are listed in the README ("Exit codes").
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: unexpected exception (traceback only with --verbose)
EXIT_USAGE = 2  # bad arguments or input: empty question, unknown protocol, bad config
EXIT_UNKNOWN_MODEL = 3  # unknown model name or quantisation
EXIT_BAD_MODEL_FILE = 4  # path missing, not a GGUF, truncated or corrupt
EXIT_DOWNLOAD = 5  # download needed but impossible (offline, HTTP error, file not on the Hub)
EXIT_ENGINE = 6  # llama.cpp could not load or run the model
EXIT_IO = 7  # a file or stream could not be read or written: permission, disk full, read-only, closed stdout
EXIT_CHECK_FAILED = 8  # a requested check failed (replay below --min-rate)
EXIT_HANGUP = 129  # SIGHUP (128 + 1): the terminal went away; handled like Ctrl-C
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (128 + SIGPIPE), quietly, as Unix tools do
EXIT_TERMINATED = 143  # SIGTERM (128 + 15): handled like Ctrl-C


class MathsolveError(Exception):
    """Base class: a failure with a message fit for one line and an exit code."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        # One line, always: callers print it after "error: ".
        return " ".join(str(self).split("\n"))


class UsageError(MathsolveError):
    exit_code = EXIT_USAGE


class UnknownModelError(MathsolveError):
    exit_code = EXIT_UNKNOWN_MODEL


class ModelFileError(MathsolveError):
    exit_code = EXIT_BAD_MODEL_FILE


class DownloadError(MathsolveError):
    exit_code = EXIT_DOWNLOAD


class EngineError(MathsolveError):
    exit_code = EXIT_ENGINE


class IOFailure(MathsolveError):
    """A file or stream the user named could not be read or written (not a bug)."""

    exit_code = EXIT_IO


class CheckFailed(MathsolveError):
    exit_code = EXIT_CHECK_FAILED
