"""Settings: command-line flags, then environment variables, then the config file.

The config file is TOML at `<user config dir>/mathsolve/config.toml` (Linux:
~/.config/mathsolve/config.toml; macOS: ~/Library/Application Support/mathsolve/),
or the file named by MATHSOLVE_CONFIG. Keys are the setting names below, at top
level. Each environment variable is MATHSOLVE_<NAME IN CAPITALS>.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mathsolve.errors import IOFailure, UsageError


DEFAULT_MODEL = "qwen2.5-math-1.5b"
# llama.cpp KV cache types offered (ggml type names): f16 is llama.cpp's default and
# what the published results used; the quantized ones trade a little precision for memory.
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


# Every value is checked here, whichever of the three sources it came from, so nothing
# out of range reaches llama.cpp (which aborts the whole process on some values: a
# thread count of 100,000 ends in std::bad_alloc), the sandbox or a server. A bad
# value is a UsageError naming the setting and where the value came from.
MAX_SEED = 2**32 - 1  # llama.cpp's seed is a uint32
MAX_CONTEXT = 2**24  # tokens; far beyond any released checkpoint's training context
DAY_S = 86_400.0
MAX_SAMPLES = 1024  # -n: samples per problem (the strongest published pipelines vote over 64)
MAX_PARALLEL = 256  # sequences in one llama.cpp context (llama.h's LLAMA_MAX_SEQ)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return text

    return parse


def _switch(value: Any) -> str:
    """auto, on or off; booleans and their spellings (a config file's `true`) mean on/off."""
    text = str(value).strip().lower()
    if text == "auto":
        return text
    try:
        return "on" if _bool(value) else "off"
    except ValueError:
        raise ValueError(f"expected auto, on or off, got {value!r}") from None


def _text(value: Any) -> str:
    """A name, path or URL: a string, not empty, printable in an error message."""
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError("must not be empty")
    if "\0" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: an environment value that is not UTF-8
        raise ValueError(f"is not valid UTF-8 text: {value!r}") from None
    return value


def _number(value: Any, kind: type) -> int | float:
    """An int or float from a flag, an environment string or a TOML value; booleans and
    fractional numbers for integer settings are refused rather than silently converted."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"expected a whole number, got {value!r}")
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
    try:
        number = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected a number, got {value!r}") from None
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _ranged(kind: type, low: float, high: float, *, low_open: bool = False, auto: bool = False,
            why: str = "") -> Callable[[Any], Any]:
    """A number in [low, high] (or (low, high] with `low_open`); `auto` also accepts
    None, "" and "auto" meaning "decide for me"."""
    def parse(value: Any) -> Any:
        if auto and (value is None or str(value).strip().lower() in ("", "auto")):
            return None
        number = _number(value, kind)
        too_low = number <= low if low_open else number < low
        if too_low or number > high:
            bound = "above" if low_open else "at least"
            raise ValueError(f"must be {bound} {_plain(low)} and at most {_plain(high)}{why}, got {value!r}")
        return number

    parse.range = (low, high, low_open)  # type: ignore[attr-defined]
    return parse


def _early_stop(value: Any) -> int | None:
    """auto (None: stop once the leader cannot be overtaken), off (0: every sample runs), or
    N agreeing samples (1 to MAX_SAMPLES)."""
    text = str(value).strip().lower() if not isinstance(value, (bool, int, float)) else None
    if value is None or text in ("", "auto"):
        return None
    if text == "off":
        return 0
    try:
        return _ranged(int, 0, MAX_SAMPLES)(value)
    except ValueError as exc:
        raise ValueError(f"expected auto, off or a number of agreeing samples: {exc}") from None


_early_stop.range = (0, MAX_SAMPLES, False)  # type: ignore[attr-defined]


def available_cores() -> int:
    """The cores this process may run on. os.cpu_count() ignores CPU affinity (containers,
    taskset); llama.cpp's own default of half the cores is too few on small machines."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _threads(value: Any) -> int | None:
    """More threads than cores only slows llama.cpp down, and huge counts abort it."""
    limit = 4 * available_cores()
    return _ranged(int, 1, limit, auto=True, why=f" (4 x the {limit // 4} cores this process may use)")(value)


@dataclass(frozen=True)
class Spec:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("model", _text, DEFAULT_MODEL, "catalog NAME[:QUANT] or a path to a .gguf file"),
        Spec("protocol", _text, None, "prompt/tool protocol (default: the catalog entry's)"),
        Spec("engine", _text, "llama", "inference engine"),
        Spec("n_ctx", _ranged(int, 64, MAX_CONTEXT, auto=True), None,
             "context size in tokens, 64 to 16,777,216 (auto: catalog, then protocol)"),
        Spec("n_gpu_layers", _ranged(int, -1, 100_000, auto=True), None,
             "layers offloaded to the GPU, -1 = all (auto: all when the build can)"),
        Spec("threads", _threads, None, "CPU threads, 1 to 4 x cores (auto: the cores this process may use)"),
        Spec("extra_buffers", _choice("auto", "on", "off"), "auto", "llama.cpp weight repacking (auto: probed once per CPU)"),
        Spec("flash_attn", _switch, "auto", "flash attention (auto: on when layers run on a GPU, or the KV cache is quantized)"),
        Spec("kv_cache", _choice(*KV_CACHE_TYPES), "f16", "KV cache type: q8_0 halves its memory, q4_0 quarters it (needs flash attention)"),
        Spec("reasoning", _choice("auto", "low", "medium", "high"), "auto",
             "reasoning effort for protocols trained with one (harmony); auto: the protocol's default"),
        Spec("thinking", _switch, "auto", "thinking on or off for protocols that offer both (qwen3-tir); auto: the protocol's default"),
        Spec("grader", _choice("auto", "reference", "math-verify"), "auto",
             "who judges answers: reference (2023-2024 harnesses' rules), math-verify, or auto (the protocol's)"),
        Spec("temperature", _ranged(float, 0.0, 100.0), 0.0, "sampling temperature, 0 to 100 (0: greedy, as published)"),
        Spec("top_p", _ranged(float, 0.0, 1.0, low_open=True), 1.0, "nucleus sampling, above 0 and at most 1"),
        Spec("top_k", _ranged(int, 0, 2**31 - 1), 0, "top-k sampling (0: off)"),
        Spec("min_p", _ranged(float, 0.0, 1.0), 0.0, "min-p sampling, 0 to 1 (0: off)"),
        Spec("seed", _ranged(int, 0, MAX_SEED), 0, "sampling seed, 0 to 4294967295"),
        Spec("max_rounds", _ranged(int, 1, 1000, auto=True), None, "tool rounds, 1 to 1000 (auto: the protocol's)"),
        Spec("max_tokens", _ranged(int, 1, MAX_CONTEXT, auto=True), None, "new tokens per round (auto: the protocol's)"),
        Spec("tool", _text, None, "force one tool backend for every block"),
        Spec("tool_timeout", _ranged(float, 0.0, DAY_S, low_open=True, auto=True), None,
             "seconds per code block, up to a day (auto: the protocol's)"),
        Spec("tool_memory_mb", _ranged(int, 64, 2**20), 4096, "memory limit per code block, 64 MB to 1 TB"),
        Spec("base_url", _text, None, "engine openai: the server's OpenAI API root, e.g. http://HOST:8000/v1"),
        Spec("api_key_env", _text, None, "engine openai: environment variable holding the server's API key"),
        Spec("request_timeout", _ranged(float, 0.0, DAY_S, low_open=True), 600.0,
             "engine openai: seconds to wait for the server to make progress, up to a day"),
        Spec("concurrency", _ranged(int, 1, 1024), 1, "problems in flight at once in batches and evals"),
        Spec("parallel", _ranged(int, 1, MAX_PARALLEL, auto=True), None,
             "sequences generating at once (samples of -n and problems in flight), 1 to 256 (auto: 8 on the "
             "CPU, 32 with GPU layers, 8 for a server; never more than the KV cache memory holds)"),
        Spec("early_stop", _early_stop, None,
             "end a -n vote early: N agreeing samples, off, or auto (once the leader cannot be overtaken)"),
        Spec("time_budget", _ranged(float, 0.0, DAY_S, low_open=True, auto=True), None,
             "seconds per problem; then the samples still running are cancelled and the vote uses what finished"),
        Spec("offline", _bool, False, "never touch the network (also HF_HUB_OFFLINE=1)"),
        Spec("verbose", _bool, False, "show llama.cpp's own logging and tracebacks"),
    )
}


def toml_module():
    """The TOML reader (tomllib, or tomli before Python 3.11), imported when a file is read:
    every command imports this module, most read no TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def config_path() -> Path:
    explicit = os.environ.get("MATHSOLVE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    import click  # typer depends on click; get_app_dir knows each OS's convention

    return Path(click.get_app_dir("mathsolve")) / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    """The config file's settings. The default location may be absent; a file named by
    MATHSOLVE_CONFIG must exist, since a typo there would otherwise go unnoticed."""
    explicit = bool(os.environ.get("MATHSOLVE_CONFIG"))
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            raise UsageError(f"config file {path} is not a regular file")  # a FIFO would block forever
        data_bytes = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"MATHSOLVE_CONFIG names {path}, which does not exist") from None
        return {}
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise IOFailure(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        tomllib = toml_module()
        data = tomllib.loads(data_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else " ".join(str(exc).split())[:200]
        raise UsageError(f"config file {path} is not valid TOML: {reason}") from None
    unknown = sorted(set(data) - set(SPECS))
    if unknown:
        raise UsageError(f"config file {path}: unknown setting(s) {', '.join(map(repr, unknown))}")
    return data


@dataclass(frozen=True)
class Value:
    value: Any
    source: str  # "flag", "env MATHSOLVE_X", "config <path>", "default"


class Settings:
    """Effective settings with the origin of each value."""

    def __init__(self, flags: dict[str, Any] | None = None, *, env: dict[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = config_path()
        config = _read_config(path)
        self.values: dict[str, Value] = {}
        for name, spec in SPECS.items():
            env_name = f"MATHSOLVE_{name.upper()}"
            if flags and flags.get(name) is not None:
                raw, source = flags[name], "flag"
            elif env.get(env_name) not in (None, ""):
                raw, source = env[env_name], f"env {env_name}"
            elif name in config:
                raw, source = config[name], f"config {path}"
            else:
                self.values[name] = Value(spec.default, "default")
                continue
            try:
                self.values[name] = Value(spec.parse(raw), source)
            except (TypeError, ValueError, OverflowError) as exc:
                where = f"flag --{name.replace('_', '-')}" if source == "flag" else source
                raise UsageError(f"setting {name} from {where}: {exc}") from None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name].value
        except KeyError:
            raise AttributeError(name) from None

    def with_overrides(self, **flags: Any) -> Settings:
        merged = {k: v.value for k, v in self.values.items() if v.source == "flag"}
        merged.update({k: v for k, v in flags.items() if v is not None})
        return Settings(merged)
