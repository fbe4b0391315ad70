#!/usr/bin/env bash
# Runs the C++ and Python training-step benchmarks in one go (2 threads each,
# one after the other so they do not share cores) and prints the ratios.
#   bash bench/run.sh [BUILD_DIR] [STEPS]
set -euo pipefail
build=${1:-build}
steps=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
"$build/bin/dfkd-bench-train-step" --threads 2 --steps "$steps" | tee "$out"
/usr/bin/python3 "$here/train_step_bench.py" 2 "$steps" | tee -a "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
step = {(r["lang"], r["net"]): r for r in rows if r["bench"] == "train_step"}
print("\n| net | C++ ms/step | Python ms/step | C++/Python time | target |")
print("|---|---|---|---|---|")
targets = {"resnet18": 1.0, "wrn16_1": 0.9, "wrn16_1_fmnist": None}
for net, tgt in targets.items():
    c, p = step.get(("cpp", net)), step.get(("python", net))
    if c and p:
        ratio = c["median_ms"] / p["median_ms"]
        verdict = "" if tgt is None else ("<= %.1f ok" % tgt if ratio <= tgt else "> %.1f MISSED" % tgt)
        print("| %s | %.1f | %.1f | %.2f | %s |" % (net, c["median_ms"], p["median_ms"], ratio, verdict))
for r in rows:
    if r["bench"] == "loader":
        print("loader %-22s %8.0f images/s (batch 128, augment + normalise, %d threads)"
              % (r["data"], r["images_per_s"], r["threads"]))
    if r["bench"] == "read_fashion_mnist_train_gz":
        print("read Fashion-MNIST train .gz: %.2f s for %d images" % (r["seconds"], r["images"]))
PY
rm -f "$out"
