#!/usr/bin/env bash
# Compiles the NCCL half of worker/dist/c10d_communicator.cc (-fsyntax-only)
# against Debian's LibTorch 1.13 headers, on a machine with a CUDA toolkit but
# no GPU and no CUDA LibTorch (this one: /usr/local/cuda). It catches a
# broken NCCL branch without a GPU; it links nothing and runs nothing.
#   tests/gpu/nccl_compile_check.sh [BUILD_DIR]   (default: build)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
cuda=${CUDA_HOME:-/usr/local/cuda}
for f in "$cuda/include/cuda_runtime_api.h" "$cuda/include/nccl.h" "$build/compile_commands.json"; do
  [ -f "$f" ] || { echo "nccl_compile_check: $f is missing" >&2; exit 2; }
done
# Debian ships c10/cuda's headers but not this generated one.
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
echo "#define C10_CUDA_BUILD_SHARED_LIBS" >"$stub/c10/cuda/impl/cuda_cmake_macros.h"
python3 - "$build/compile_commands.json" "$src/worker/dist/c10d_communicator.cc" "$cuda" "$stub" \
    >"$stub/cmd.sh" <<'PY'
import json, re, shlex, sys
db, source, cuda, stub = sys.argv[1:]
entry = next(e for e in json.load(open(db)) if e["file"] == source)
cmd = entry["command"]
cmd = re.sub(r"^.*?ccache ", "", cmd)                  # no launcher
cmd = re.sub(r"-include \S+cmake_pch\.hxx|-Winvalid-pch", "", cmd)
cmd = re.sub(r"-o \S+", "", cmd)
cmd += " -fsyntax-only -DDFKD_WITH_CUDA -DDFKD_WITH_NCCL -DUSE_C10D_NCCL"
cmd += " -isystem " + shlex.quote(cuda + "/include") + " -isystem " + shlex.quote(stub)
print("cd " + shlex.quote(entry["directory"]) + " && " + cmd)
PY
bash "$stub/cmd.sh"
v=/usr/include/torch/csrc/api/include/torch/version.h
echo "nccl_compile_check: the NCCL branch of c10d_communicator.cc compiles against LibTorch" \
  "$(awk '/define TORCH_VERSION_(MAJOR|MINOR) / {printf "%s%s", sep, $3; sep="."}' "$v")" \
  "headers and $("$cuda/bin/nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo CUDA)"
