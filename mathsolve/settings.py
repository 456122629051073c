"""Settings: command-line flags, then environment variables, then the config file.

The config file is TOML at `<user config dir>/mathsolve/config.toml` (Linux:
~/.config/mathsolve/config.toml; macOS: ~/Library/Application Support/mathsolve/),
or the file named by MATHSOLVE_CONFIG. Keys are the setting names below, at top
level. Each environment variable is MATHSOLVE_<NAME IN CAPITALS>.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mathsolve.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_MODEL = "qwen2.5-math-1.5b"
# llama.cpp KV cache types offered (ggml type names): f16 is llama.cpp's default and
# what the published results used; the quantized ones trade a little precision for memory.
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")


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


def _optional_int(value: Any) -> int | None:
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    return int(value)


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {value!r}")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be positive, got {value!r}")
    return number


@dataclass(frozen=True)
class Spec:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("model", str, DEFAULT_MODEL, "catalog NAME[:QUANT] or a path to a .gguf file"),
        Spec("protocol", str, None, "prompt/tool protocol (default: the catalog entry's)"),
        Spec("engine", str, "llama", "inference engine"),
        Spec("n_ctx", _optional_int, None, "context size in tokens (auto: catalog, then protocol)"),
        Spec("n_gpu_layers", _optional_int, None, "layers offloaded to the GPU (auto: all when the build can)"),
        Spec("threads", _optional_int, None, "CPU threads (auto: the cores this process may use)"),
        Spec("extra_buffers", _choice("auto", "on", "off"), "auto", "llama.cpp weight repacking (auto: probed once per CPU)"),
        Spec("flash_attn", _switch, "auto", "flash attention (auto: on when layers run on a GPU, or the KV cache is quantized)"),
        Spec("kv_cache", _choice(*KV_CACHE_TYPES), "f16", "KV cache type: q8_0 halves its memory, q4_0 quarters it (needs flash attention)"),
        Spec("temperature", float, 0.0, "sampling temperature (0: greedy, as published)"),
        Spec("top_p", float, 1.0, "nucleus sampling"),
        Spec("top_k", int, 0, "top-k sampling (0: off)"),
        Spec("min_p", float, 0.0, "min-p sampling (0: off)"),
        Spec("seed", int, 0, "sampling seed"),
        Spec("max_rounds", _optional_int, None, "tool rounds (auto: the protocol's)"),
        Spec("max_tokens", _optional_int, None, "new tokens per round (auto: the protocol's)"),
        Spec("tool", str, None, "force one tool backend for every block"),
        Spec("tool_timeout", float, None, "seconds per code block (auto: the protocol's)"),
        Spec("tool_memory_mb", int, 4096, "memory limit per code block"),
        Spec("base_url", str, None, "engine openai: the server's OpenAI API root, e.g. http://HOST:8000/v1"),
        Spec("api_key_env", str, None, "engine openai: environment variable holding the server's API key"),
        Spec("request_timeout", _positive_float, 600.0, "engine openai: seconds to wait for the server (between stream chunks)"),
        Spec("concurrency", _positive_int, 1, "problems in flight at once in batches and evals (server engines)"),
        Spec("offline", _bool, False, "never touch the network (also HF_HUB_OFFLINE=1)"),
        Spec("verbose", _bool, False, "show llama.cpp's own logging and tracebacks"),
    )
}


def config_path() -> Path:
    explicit = os.environ.get("MATHSOLVE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    import click  # typer depends on click; get_app_dir knows each OS's convention

    return Path(click.get_app_dir("mathsolve")) / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(SPECS))
    if unknown:
        raise UsageError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
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
            except (TypeError, ValueError) as exc:
                raise UsageError(f"setting {name} from {source}: {exc}") from None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name].value
        except KeyError:
            raise AttributeError(name) from None

    def with_overrides(self, **flags: Any) -> Settings:
        merged = {k: v.value for k, v in self.values.items() if v.source == "flag"}
        merged.update({k: v for k, v in flags.items() if v is not None})
        return Settings(merged)
