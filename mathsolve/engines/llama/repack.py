"""Decide whether llama.cpp may repack weights into its extra CPU buffer types.

Repacking (the AMX buffer and the CPU "repack" buffer) makes CPU matrix products
faster, but on some CPUs (seen on Intel Xeon with AVX-512 + AMX, llama.cpp issue
20824) every multi-token decode then segfaults, which kills the Python process
and cannot be caught. So mathsolve never tries it in its own process first:

- `on` / `off` force the choice (setting `extra_buffers`);
- `auto` asks a cached verdict for (llama.cpp build, CPU, GGUF file type); with no
  verdict yet, a throw-away child process loads the model with repacking on and
  decodes a few tokens. A clean exit means safe (fast path kept); death by a signal
  means unsafe (repacking off from then on). The verdict is stored in the user
  cache directory, so the probe runs once per build, CPU and quantisation type.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROBE_TIMEOUT_S = 600.0

# The child runs `probe_child` (below) through this one-liner.
_PROBE_SCRIPT = "import sys; from mathsolve.engines.llama.repack import probe_child; probe_child(sys.argv[1])"


def probe_child(model_path: str) -> None:
    """In the throw-away child: load with repacking on, decode a batch, sample a few tokens."""
    import llama_cpp

    from mathsolve.engines.llama.params import model_params

    with model_params(extra_buffers=True):
        llm = llama_cpp.Llama(model_path, n_ctx=256, n_gpu_layers=0, verbose=False)
    tokens = llm.tokenize(b"def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n", add_bos=True)
    for i, _ in enumerate(llm.generate(tokens, temp=0.0)):
        if i >= 3:
            break
    print("probe-ok")


@dataclass(frozen=True)
class Verdict:
    extra_buffers: bool
    reason: str


def cpu_signature() -> str:
    """CPU model and the instruction-set flags that select llama.cpp kernels."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    wanted = ("avx", "amx", "fma", "f16c", "sve", "asimd", "i8mm", "dotprod")
                    flags = " ".join(sorted(f for f in value.split() if f.startswith(wanted)))
    except OSError:
        pass
    return f"{model} [{flags}]"


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mathsolve" / "repack-probe.json"


def probe_key(file_type: int | None) -> str:
    import llama_cpp

    raw = f"{llama_cpp.__version__}|{cpu_signature()}|{file_type}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _store(path: Path, key: str, entry: dict) -> None:
    cache = _load_cache(path)
    cache[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a concurrent reader never sees half a file.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as tmp:
        json.dump(cache, tmp, indent=1)
    os.replace(tmp.name, path)


def run_probe(model_path: str) -> tuple[bool | None, str]:
    """True: safe; False: the child died by a signal; None: inconclusive."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT, model_path],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, "probe timed out"
    if proc.returncode < 0:
        return False, f"probe child killed by signal {-proc.returncode}"
    if proc.returncode == 0 and "probe-ok" in proc.stdout:
        return True, "probe decoded cleanly"
    return None, f"probe failed (exit {proc.returncode})"


def decide(
    model_path: str,
    *,
    setting: str,
    file_type: int | None,
    weights_on_gpu: bool,
    probe: Callable[[str], tuple[bool | None, str]] = run_probe,
    notify: Callable[[str], None] | None = None,
) -> Verdict:
    if setting == "on":
        return Verdict(True, "extra_buffers=on (forced)")
    if setting == "off":
        return Verdict(False, "extra_buffers=off (forced)")
    if weights_on_gpu:
        # Repacking only concerns weights kept in CPU memory.
        return Verdict(True, "weights offloaded to the GPU")
    path, key = cache_path(), probe_key(file_type)
    known = _load_cache(path).get(key)
    if known is not None:
        return Verdict(bool(known["safe"]), f"cached probe: {known['reason']}")
    if notify:
        notify("checking once whether llama.cpp weight repacking is safe on this CPU...")
    safe, reason = probe(model_path)
    if safe is None:
        return Verdict(False, f"{reason}; repacking off to be safe")
    _store(path, key, {"safe": safe, "reason": reason, "cpu": cpu_signature(), "file_type": file_type})
    return Verdict(safe, reason)
