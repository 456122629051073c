"""`mathsolve doctor`: what this installation can do, in one screen."""

from __future__ import annotations

import platform
import sys


def gather() -> list[tuple[str, str, str]]:
    """(section, item, value) rows; each probe is guarded so one failure shows as a row."""
    rows: list[tuple[str, str, str]] = [
        ("system", "python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("system", "platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
    ]

    def add(section: str, item: str, fn) -> None:
        try:
            rows.append((section, item, str(fn())))
        except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
            rows.append((section, item, f"unavailable: {type(exc).__name__}: {exc}"))

    add("llama.cpp", "llama-cpp-python", _llama_version)
    add("llama.cpp", "GPU offload", _gpu)
    add("llama.cpp", "backend features", _system_info)
    add("engine", "threads", _threads)
    add("engine", "n_gpu_layers (auto)", lambda: "-1 (all layers)" if _gpu_supported() else "0 (CPU build)")
    add("engine", "CPU", _cpu)
    add("engine", "weight repacking", _repack_verdicts)
    add("cache", "Hugging Face hub cache", _cache)
    add("cache", "free disk", _free)
    add("plugins", "loaded", _plugins)
    add("plugins", "tools", lambda: ", ".join(sorted(_registry().tools())) or "none")
    add("sandbox", "protections", _sandbox)
    return rows


def _registry():
    from mathsolve import registry

    return registry


def _llama_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def _gpu_supported() -> bool:
    from mathsolve.engines.llama import gpu_offload_supported

    return gpu_offload_supported()


def _gpu() -> str:
    if not _gpu_supported():
        return "no (CPU-only build; rebuild with install.sh on a CUDA or Metal machine)"
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        return f"yes (CUDA): {out or 'NVIDIA GPU'}"
    if platform.system() == "Darwin":
        return "yes (Metal)"
    return "yes"


def _system_info() -> str:
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return " ".join(part.strip() for part in info.split("|") if "= 1" in part or ":" in part)[:400]


def _threads() -> str:
    from mathsolve.settings import available_cores

    return f"{available_cores()} (the cores this process may run on)"


def _cpu() -> str:
    from mathsolve.engines.llama.repack import cpu_signature

    return cpu_signature()


def _repack_verdicts() -> str:
    import json

    from mathsolve.engines.llama.repack import cache_path

    path = cache_path()
    if not path.is_file():
        return "auto: probed on first load of each model type (none yet)"
    entries = json.loads(path.read_text())
    mine = [e for e in entries.values() if e.get("cpu") == _cpu()]
    if not mine:
        return "auto: not probed on this CPU yet"
    return "; ".join(f"file type {e['file_type']}: {'on' if e['safe'] else 'OFF'} ({e['reason']})" for e in mine)


def _cache() -> str:
    from mathsolve import hub

    return str(hub.cache_root())


def _free() -> str:
    from mathsolve import hub
    from mathsolve.sizes import format_size

    return format_size(hub.free_disk_bytes())


def _plugins() -> str:
    from mathsolve.plugins import get_plugin_manager

    _registry().load_all()
    pm = get_plugin_manager()
    parts = [f"{i.name} ({i.source})" + (f" BROKEN: {i.error}" if i.error else "") for i in pm.infos.values()]
    return "; ".join(parts)


def _sandbox() -> str:
    from mathsolve.sandbox import capabilities

    caps = capabilities()
    return ", ".join(f"{k}={'yes' if v is True else 'no' if v is False else v}" for k, v in caps.items())


def print_report() -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="mathsolve doctor", title_justify="left", show_lines=False)
    for column in ("", "item", "value"):
        table.add_column(column, overflow="fold")
    last = None
    for section, item, value in gather():
        table.add_row(section if section != last else "", item, escape(value))
        last = section
    Console().print(table)
