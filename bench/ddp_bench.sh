#!/usr/bin/env bash
# Data-parallel scaling on this machine: ResNet-18 on Fashion-MNIST-shaped
# data (1x28x28), global batch 128, 2 ranks x 1 thread (Gloo over loopback)
# against 1 rank x 2 threads, then the share of a step spent averaging
# gradients (exposed: what backward did not hide), with the all-reduce
# overlapped with backward (dist.overlap, the default) and without.
# Reads step_seconds / grad_sync_seconds from result.json.
#   bash bench/ddp_bench.sh [BUILD_DIR] [STEPS]
set -euo pipefail
build=${1:-build}
steps=${2:-12}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/spec.json" <<JSON
{"version": 1, "kind": "train_teacher", "seed": 0,
 "data": {"dataset": "fashion_mnist", "test_limit": 200, "augment": false},
 "model": {"arch": "resnet", "depth": 18},
 "train": {"epochs": 1, "max_steps": $steps, "batch_size": 128, "checkpoint_every_steps": 100000}}
JSON
"$build/bin/dfkd-train" -q "$tmp/spec.json" -o "$tmp/one" --threads 2 >/dev/null
"$build/bin/dfkd-train" -q "$tmp/spec.json" -o "$tmp/two" --nproc 2 >/dev/null
sed 's/"kind"/"dist": {"overlap": false}, "kind"/' "$tmp/spec.json" >"$tmp/spec_after.json"
"$build/bin/dfkd-train" -q "$tmp/spec_after.json" -o "$tmp/after" --nproc 2 >/dev/null
/usr/bin/python3 - "$tmp" "$steps" <<'PY'
import json, sys
tmp, steps = sys.argv[1], int(sys.argv[2])
one = json.load(open(tmp + "/one/result.json"))
two = json.load(open(tmp + "/two/result.json"))
after = json.load(open(tmp + "/after/result.json"))
a = one["step_seconds"] / steps
b = two["step_seconds"] / steps
c = after["step_seconds"] / steps
print(json.dumps({"bench": "ddp_resnet18", "steps": steps,
                  "one_rank_2_threads_ms": a * 1000, "two_ranks_1_thread_ms": b * 1000,
                  "ratio": b / a, "grad_sync_share_two_ranks": two["grad_sync_seconds"] / two["step_seconds"],
                  "two_ranks_no_overlap_ms": c * 1000, "ratio_no_overlap": c / a,
                  "grad_sync_share_no_overlap": after["grad_sync_seconds"] / after["step_seconds"]}))
print("ResNet-18, global batch 128: 1 rank x 2 threads %.0f ms/step, 2 ranks x 1 thread %.0f ms/step, "
      "ratio %.3f (target <= 1.05); gradient averaging %.1f%% of a 2-rank step"
      % (a * 1000, b * 1000, b / a, 100 * two["grad_sync_seconds"] / two["step_seconds"]))
print("without overlap: 2 ranks x 1 thread %.0f ms/step, ratio %.3f, gradient averaging %.1f%%"
      % (c * 1000, c / a, 100 * after["grad_sync_seconds"] / after["step_seconds"]))
PY
