"""5. Memory: peak RSS of a process that loads the model and solves one problem,
against the model file plus the KV cache.

The solve runs in a child process (`python -m bench.memory MODEL`), which reports
its own peak resident set after the solve (VmHWM from /proc; ru_maxrss where there
is no /proc, which on Linux would also hold the peak of the forking parent). The KV cache is
computed from the GGUF's metadata as llama.cpp reads it: n_layer x n_ctx x
n_head_kv x (key_length + value_length) x 2 bytes (f16 cache, llama.cpp's default).
Code blocks run in their own sandboxed processes and are not counted.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from typing import Any

from bench.common import MODEL_PROTOCOL, ROOT

KV_BYTES_PER_ELEMENT = 2  # f16


def kv_cache_bytes(metadata: dict[str, str], n_ctx: int) -> dict[str, int]:
    arch = metadata["general.architecture"]
    n_layer = int(metadata[f"{arch}.block_count"])
    n_head = int(metadata[f"{arch}.attention.head_count"])
    n_head_kv = int(metadata.get(f"{arch}.attention.head_count_kv", n_head))
    head_dim = int(metadata[f"{arch}.embedding_length"]) // n_head
    k_dim = int(metadata.get(f"{arch}.attention.key_length", head_dim))
    v_dim = int(metadata.get(f"{arch}.attention.value_length", head_dim))
    return {
        "n_layer": n_layer, "n_ctx": n_ctx, "n_head_kv": n_head_kv, "key_length": k_dim, "value_length": v_dim,
        "bytes": n_layer * n_ctx * n_head_kv * (k_dim + v_dim) * KV_BYTES_PER_ELEMENT,
    }


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))
    except (OSError, StopIteration):  # no /proc (macOS)
        return None


def child(model: str, extra_buffers: str) -> None:
    from bench.common import gsm8k
    from mathsolve.api import Solver

    question = gsm8k(1)[0].question
    with Solver(model=model, protocol=MODEL_PROTOCOL, extra_buffers=extra_buffers) as solver:
        after_load = _status_kib("VmRSS")
        record = solver.solve(question)
        engine = solver.engine
        report = {
            "extra_buffers": engine.info.details["extra_buffers"],
            "rss_after_load_kib": after_load,
            "rss_after_solve_kib": _status_kib("VmRSS"),
            "vmhwm_kib": _status_kib("VmHWM"),
            "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "kv": kv_cache_bytes(engine.llm.metadata, engine.n_ctx),
            "generated": record["tokens"]["generated"],
        }
    print(json.dumps(report))


def measure(model: str, extra_buffers: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "bench.memory", model, extra_buffers],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    size = os.path.getsize(model)
    # VmHWM is this process's own peak; ru_maxrss also keeps the peak of the process it
    # was forked from (Linux carries it across exec), here the benchmark with its models.
    peak = (report["vmhwm_kib"] or report["ru_maxrss_kib"]) * 1024
    report |= {"model_bytes": size, "peak_bytes": peak,
               "peak_over_model_plus_kv": peak / (size + report["kv"]["bytes"])}
    return report


def run(ctx, reps: int) -> dict[str, Any]:
    model = str(ctx.model_path)
    results = {"auto": measure(model, "auto")}
    if results["auto"]["extra_buffers"]:  # repacking on: also without it, for what it costs
        results["off"] = measure(model, "off")
    return {"runs": results}


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for name, r in result["runs"].items():
        mib = 2**20
        label = "weight repacking " + ("on" if r["extra_buffers"] else "off")
        out.append((
            f"5. peak RSS of a solve ({label})",
            f"{r['peak_bytes'] / mib:.0f} MiB = {r['peak_over_model_plus_kv']:.2f} x (model "
            f"{r['model_bytes'] / mib:.0f} MiB + KV {r['kv']['bytes'] / mib:.0f} MiB)", "info", "",
        ))
    return out


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "auto")
