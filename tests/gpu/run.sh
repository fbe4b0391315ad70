#!/usr/bin/env bash
# The GPU check of the distributed issue: builds the engine against the CUDA
# LibTorch of the machine's PyTorch install and runs a short CUDA, NCCL and
# throughput check. Two steps, because the GPU machine reaches no package
# registry:
#
#   bash tests/gpu/run.sh prepare    # here (Debian 12, after install-deps):
#                                    # fills .gpu/ (git-ignored) with the
#                                    # header packages the engine needs, the
#                                    # Fashion-MNIST files and a small pool
#   bash tests/gpu/run.sh check      # on the GPU machine, with .gpu/ carried;
#                                    # about 5 minutes on 16 cores
#
# For a dry run of `check` on a machine without a GPU (the script's own
# logic; the CUDA checks then fail): DFKD_GPU_BUILD=build (use that build,
# skip configuring and building) DFKD_GPU_DEVICE=cpu.
#
# `check` prints one line per check ("ok: ..." / "FAIL: ...") and a summary,
# also written to $OUT/gpu_check.txt when OUT is set; it exits non-zero when
# any check failed. Nothing here runs in CI (no GPU there); the CPU build keeps
# dfkd-gpu-check compiling.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
cache="$src/.gpu"
mode=${1:-check}

prepare() {
  mkdir -p "$cache/debs" "$cache/data"
  # Header-only or static parts of Debian packages; the GPU image lacks them.
  (cd "$cache/debs" && apt-get download nlohmann-json3-dev libcli11-dev libgtest-dev \
     libgmock-dev zlib1g-dev libgloo-dev)
  cp -r /usr/share/datasets/fashion-mnist "$cache/data/"
  "$src/build/bin/dfkd" pool --shape 1x28x28 --count 2000 --seed 1 --force \
    --out "$cache/data/wild.pool"
  du -sh "$cache"
}

check() {
  local work=${DFKD_GPU_WORK:-/tmp/dfkd-gpu}
  local python=${PYTHON:-python3}
  local summary=${OUT:-$work}/gpu_check.txt
  mkdir -p "$work" "$(dirname "$summary")"
  : >"$summary"
  local failures=0
  say() { echo "$*" | tee -a "$summary"; }
  ok() { say "ok: $*"; }
  bad() { say "FAIL: $*"; failures=$((failures + 1)); }
  # result RUN PYEXPR: PYEXPR evaluated on RUN's result.json as r.
  result() { $python -c "import json; r = json.load(open('$runs/$1/result.json')); print($2)"; }

  [ -d "$cache/debs" ] || { echo "run '$0 prepare' on the build machine and carry .gpu" >&2; exit 2; }
  local prefix="$work/prefix"
  mkdir -p "$prefix"
  for d in "$cache"/debs/*.deb; do dpkg -x "$d" "$prefix"; done

  # What the PyTorch install offers.
  local torch_prefix abi torch_include nccl_root libz
  torch_prefix=$($python -c "import torch; print(torch.utils.cmake_prefix_path)")
  abi=$($python -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
  torch_include=$($python -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
  nccl_root=$($python - <<'PY'
import glob, os, site, sys
roots = site.getsitepackages() + [p for p in sys.path if p.endswith("site-packages")]
hits = []
for r in roots:
    hits += glob.glob(os.path.join(r, "nvidia", "**", "include", "nccl.h"), recursive=True)
hits += glob.glob("/usr/include/nccl.h") + glob.glob("/usr/local/cuda*/include/nccl.h")
print(os.path.dirname(os.path.dirname(hits[0])) if hits else "")
PY
)
  libz=$(ldconfig -p | awk '/libz\.so\.1 .*x86-64/ && !found {print $NF; found = 1}')
  say "torch $($python -c 'import torch; print(torch.__version__, torch.version.cuda)') at $torch_prefix"
  say "GPUs: $(nvidia-smi -L 2>/dev/null | wc -l) ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
  say "nccl.h under: ${nccl_root:-not found}; cxx11 abi $abi; libz $libz"
  local extra="-D_GLIBCXX_USE_CXX11_ABI=$abi"
  # PyTorch wheels may lack Gloo's headers; Debian's match the API c10d uses.
  [ -d "$torch_include/gloo" ] || extra="$extra -isystem $prefix/usr/include"

  local build="$work/build" device=${DFKD_GPU_DEVICE:-cuda}
  local t0=$SECONDS
  if [ -n "${DFKD_GPU_BUILD:-}" ]; then
    build=$(cd "$DFKD_GPU_BUILD" && pwd)
    say "using the build in $build (DFKD_GPU_BUILD), device $device"
  else
  cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DDFKD_BUILD_SERVER=OFF -DDFKD_ENABLE_CUDA=ON -DDFKD_WERROR=OFF \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" -DNCCL_ROOT="$nccl_root" \
    -DZLIB_INCLUDE_DIR="$prefix/usr/include" -DZLIB_LIBRARY="$libz" \
    -DCMAKE_CXX_FLAGS="$extra" >"$work/configure.log" 2>&1 \
    || { tail -40 "$work/configure.log"; bad "configure (log above)"; return 1; }
  cmake --build "$build" -j"$(nproc)" --target dfkd_train dfkd_gpu_check cuda_smoke_test \
    >"$work/build.log" 2>&1 || { grep -E "error|Error" -A3 "$work/build.log" | head -60; bad "build"; return 1; }
  ok "engine built against the CUDA LibTorch in $((SECONDS - t0)) s"
  fi

  # A skip (no CUDA visible) is a failure here.
  if "$build/tests/cuda_smoke_test" >"$work/smoke.log" 2>&1 && ! grep -q "SKIPPED" "$work/smoke.log"; then
    ok "cuda_smoke_test: a WRN-16-1 memorises a batch on the GPU"
  else
    tail -5 "$work/smoke.log"; bad "cuda_smoke_test"
  fi
  "$build/bin/dfkd-gpu-check" | tee -a "$summary" || failures=$((failures + 1))

  # Specs: the instant configs on the GPU, Fashion-MNIST and the pool from .gpu.
  local specs="$work/specs" runs="$work/runs"
  rm -rf "$specs" "$runs"
  mkdir -p "$specs" "$runs"
  $python - "$src" "$cache" "$specs" "$runs" "$device" <<'PY'
import glob, json, os, sys
src, cache, specs, runs, device = sys.argv[1:]
for path in glob.glob(os.path.join(src, "tests/configs/instant/*.json")) + \
        [os.path.join(src, "configs/fashion_mnist/teacher.json"),
         os.path.join(src, "configs/fashion_mnist/distill_fast.json")]:
    s = json.load(open(path))
    s.setdefault("runtime", {})["device"] = device
    s["data"]["root"] = os.path.join(cache, "data/fashion-mnist")
    if s["kind"] == "distill":
        teacher = "full_teacher" if "configs/fashion_mnist" in path else "teacher"
        s["distill"]["teacher"]["weights"] = os.path.join(runs, teacher, "model.pt")
        if "pool" in s["distill"]:
            s["distill"]["pool"]["path"] = os.path.join(cache, "data/wild.pool")
    name = os.path.basename(path)
    if "configs/fashion_mnist" in path:
        name = "full_" + name
    json.dump(s, open(os.path.join(specs, name), "w"), indent=1)
PY
  local train="$build/bin/dfkd-train"
  if "$train" -q "$specs/teacher_fashion_mnist.json" -o "$runs/teacher" >"$work/teacher.log" 2>&1; then
    ok "dfkd-train: instant teacher on $device"
  else
    tail -20 "$work/teacher.log"; bad "dfkd-train: instant teacher on $device"
  fi
  for spec in "$specs"/distill_*.json; do
    local m; m=$(basename "$spec" .json)
    for kdci in false true; do
      $python -c "
import json,sys; s=json.load(open('$spec')); s.setdefault('kdci',{})['enabled']=$([ $kdci = true ] && echo True || echo False)
json.dump(s, open('$work/one.json','w'))"
      if "$train" -q "$work/one.json" -o "$runs/$m-$kdci" >"$work/$m-$kdci.log" 2>&1; then
        ok "dfkd-train: $m (kdci $kdci) on $device: $(result "$m-$kdci" "'top-1 %.1f%%' % r['test_top1']")"
      else
        tail -15 "$work/$m-$kdci.log"; bad "dfkd-train: $m (kdci $kdci) on $device"
      fi
    done
  done

  # Two ranks over Gloo with CUDA tensors on one GPU (LOCAL_RANK 0 for both,
  # since NCCL cannot put two ranks on one GPU).
  local port=$((20000 + RANDOM % 20000)) pids=()
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$train" -q "$specs/distill_class_bank.json" -o "$runs/gloo2" >"$work/gloo2-$r.log" 2>&1 &
    pids+=($!)
  done
  if wait "${pids[0]}" && wait "${pids[1]}" && \
     [ "$(result gloo2 "r['world_size']")" = 2 ]; then
    ok "2 ranks, Gloo, tensors on $device: the class bank sharded over both"
  else
    tail -10 "$work"/gloo2-*.log; bad "2 ranks over Gloo on $device"
  fi
  # NCCL between two ranks needs two GPUs.
  if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
    $python -c "
import json; s=json.load(open('$specs/distill_class_bank.json')); s['dist']={'world_size':2,'backend':'nccl'}
json.dump(s, open('$work/nccl2.json','w'))"
    if "$train" -q "$work/nccl2.json" -o "$runs/nccl2" --nproc 2 >"$work/nccl2.log" 2>&1; then
      ok "2 ranks over NCCL on 2 GPUs"
    else
      tail -20 "$work/nccl2.log"; bad "2 ranks over NCCL"
    fi
  else
    say "skipped: NCCL across 2 ranks (one GPU here; gpu_check ran NCCL in a world of one)"
  fi

  # Throughput: the Fashion-MNIST teacher (WRN-16-2, batch 128) on the GPU
  # and on this machine's CPU cores, and Fast distillation on the GPU.
  local cpus; cpus=$(nproc)
  "$train" -q "$specs/full_teacher.json" -o "$runs/full_teacher" --max-steps 400 >"$work/full.log" 2>&1 \
    && ok "teacher throughput, $device: $(result full_teacher "'%.0f img/s over %d steps' % (r['images_per_second'], r['steps'])")" \
    || { tail -10 "$work/full.log"; bad "teacher on $device (400 steps)"; }
  $python -c "
import json; s=json.load(open('$specs/full_teacher.json')); s['runtime']['device']='cpu'
json.dump(s, open('$work/cpu_teacher.json','w'))"
  "$train" -q "$work/cpu_teacher.json" -o "$runs/cpu_teacher" --max-steps 40 --threads "$cpus" >"$work/cpu.log" 2>&1 \
    && ok "teacher throughput, cpu ($cpus threads): $(result cpu_teacher "'%.0f img/s over %d steps' % (r['images_per_second'], r['steps'])")" \
    || { tail -10 "$work/cpu.log"; bad "teacher on cpu (40 steps)"; }
  [ -f "$runs/full_teacher/model.pt" ] && "$train" -q "$specs/full_distill_fast.json" -o "$runs/full_fast" \
      --max-steps 60 >"$work/fast.log" 2>&1 \
    && ok "Fast distillation, $device: $(result full_fast "'%.0f img/s, %.1f s for %d steps' % (r['images_per_second'], r['train_seconds'], r['steps'])")" \
    || { tail -10 "$work/fast.log"; bad "Fast distillation on $device (60 steps)"; }

  say "$failures failure(s); summary in $summary"
  [ "$failures" -eq 0 ]
}

case "$mode" in
  prepare) prepare ;;
  check) check ;;
  *) echo "usage: $0 prepare|check" >&2; exit 2 ;;
esac
