#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with mathsolve, its plugins and test tools.
#
# llama-cpp-python compiles llama.cpp from source. This script picks the build flags:
#   - CUDA  when nvcc is found (NVIDIA GPU machines),
#   - Metal on macOS with Apple Silicon,
#   - CPU   otherwise.
# Override with MATHSOLVE_BACKEND=cuda|metal|cpu, or pass your own CMAKE_ARGS (used as is).
# Set PYTHON to choose the interpreter (default: python3, 3.10 or newer).
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "error: mathsolve needs Python 3.10 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 2; }

backend="${MATHSOLVE_BACKEND:-}"
if [ -z "$backend" ]; then
  if [ -n "${CMAKE_ARGS:-}" ]; then backend=custom
  # CUDA needs both the toolkit and a visible NVIDIA GPU: a CUDA build takes far longer
  # and is no use on a machine that only has nvcc installed.
  elif { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; } \
       && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then backend=cuda
  elif [ "$(uname -s)" = Darwin ] && [ "$(uname -m)" = arm64 ]; then backend=metal
  else backend=cpu
  fi
fi
case "$backend" in
  cuda)   export CMAKE_ARGS="-DGGML_CUDA=on"; [ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH" ;;
  metal)  export CMAKE_ARGS="-DGGML_METAL=on" ;;
  cpu)    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_METAL=off -DGGML_CUDA=off}" ;;
  custom) ;;
  *) echo "error: MATHSOLVE_BACKEND must be cuda, metal or cpu (got '$backend')" >&2; exit 2 ;;
esac
echo "mathsolve set-up: llama.cpp backend '$backend' (CMAKE_ARGS='${CMAKE_ARGS}')" >&2

[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

# A llama-cpp-python built for another backend is kept by pip; rebuild when the choice changed.
marker=.venv/.llama-backend
rebuild=()
if [ -f "$marker" ] && [ "$(cat "$marker")" != "$backend:${CMAKE_ARGS}" ]; then
  rebuild=(--force-reinstall --no-cache-dir)
  echo "backend changed: rebuilding llama-cpp-python" >&2
elif [ ! -f "$marker" ] && [ "$backend" != cpu ]; then
  # pip's wheel cache ignores CMAKE_ARGS: never reuse a cached CPU build for a GPU one.
  rebuild=(--no-cache-dir)
fi
echo "building llama-cpp-python (compiles llama.cpp: several minutes the first time)..." >&2
python -m pip install --quiet "${rebuild[@]}" "llama-cpp-python>=0.3.30"
echo "$backend:${CMAKE_ARGS}" > "$marker"

# The product with its built-in plugins, test tools, and the example third-party plugin
# when present.
python -m pip install --quiet -e ".[test]"
for plugin in plugins/*/pyproject.toml; do
  [ -e "$plugin" ] || continue
  python -m pip install --quiet -e "$(dirname "$plugin")"
done

python - <<'PY'
import llama_cpp
gpu = llama_cpp.llama_supports_gpu_offload()
print(f"llama-cpp-python {llama_cpp.__version__}: GPU offload {'available' if gpu else 'not available (CPU build)'}")
PY
echo "done: activate with '. .venv/bin/activate', then run 'mathsolve doctor'" >&2
