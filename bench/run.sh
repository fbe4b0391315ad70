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
"$build/bin/dfkd-bench-kdci" --mode time --pairs 20 | tee -a "$out"
"$build/bin/dfkd-bench-synthesis" | tee -a "$out"
for m in memory-base memory-base-lapack memory-kdci; do
  "$build/bin/dfkd-bench-kdci" --mode $m | tee -a "$out"
done
/usr/bin/python3 "$here/train_step_bench.py" 2 "$steps" | tee -a "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
step = {(r["lang"], r["net"], r["layout"]): r for r in rows if r["bench"] == "train_step"}
print("\nEngine (C++, channels-last, as dfkd trains) against Python as a user writes it (contiguous),")
print("and both against the other layout for reference. ms per step, batch 128, 2 threads.")
print("| net | C++ engine | Python | C++/Python | target | C++ contiguous | Python channels-last |")
print("|---|---|---|---|---|---|---|")
targets = {"resnet18": 1.0, "wrn16_1": 0.9, "wrn16_1_fmnist": None}
for net, tgt in targets.items():
    c, p = step.get(("cpp", net, "channels_last")), step.get(("python", net, "contiguous"))
    c2, p2 = step.get(("cpp", net, "contiguous")), step.get(("python", net, "channels_last"))
    if c and p:
        ratio = c["median_ms"] / p["median_ms"]
        verdict = "" if tgt is None else ("<= %.1f ok" % tgt if ratio <= tgt else "> %.1f MISSED" % tgt)
        print("| %s | %.1f | %.1f | %.2f | %s | %.1f | %.1f |" % (net, c["median_ms"], p["median_ms"], ratio,
              verdict, c2["median_ms"], p2["median_ms"]))
for r in rows:
    if r["bench"] == "kdci_step_overhead":
        print("KDCI step overhead (WRN-40-2 -> WRN-16-1, batch 256, N=32 rebuilt every step): "
              "median %+.2f%%, mean %+.2f%% (base %.0f ms/step, %d interleaved pairs)"
              % (r["overhead_median_pct"], r["overhead_mean_pct"], r["base_median_ms"], r["pairs"]))
    if r["bench"] == "kdci_peak_rss":
        print("%-20s peak tensor memory %12d bytes   (peak RSS %d KB, noisy)"
              % (r["variant"], r["peak_tensor_bytes"], r["peak_rss_kb"]))
    if r["bench"] == "dictionary_build":
        print("dictionary build %dx%d, N=%d: %.2f ms" % (r["points"], r["dim"], r["prototypes"], r["median_ms"]))
    if r["bench"] == "dictionary_build_pool":
        print("dictionary build, streamed pool %dx%d, N=%d: %.1f s (%d Lloyd iterations)"
              % (r["points"], r["dim"], r["prototypes"], r["seconds"], r["kmeans_iterations"]))
    if r["bench"] == "synthesis" and r["method"] == "dafl":
        print("synthesis DAFL: %.2f s per generator step of 256, %.0f images/s" % (r["seconds_per_generator_step"], r["images_per_second"]))
    if r["bench"] == "synthesis" and r["method"] == "deepinv":
        print("synthesis DeepInv: %.2f s per pixel step of 256, %.3f images/s at 1000 steps a round"
              % (r["seconds_per_pixel_step"], r["images_per_second_at_1000_steps"]))
    if r["bench"] == "synthesis" and r["method"] == "fast":
        print("synthesis Fast-%d: %.2f s per call of 256, %.1f images/s"
              % (r["g_steps"], r["seconds_per_call"], r["images_per_second"]))
    if r["bench"] == "loader":
        print("loader %-22s %8.0f images/s (batch 128, augment + normalise, %d threads)"
              % (r["data"], r["images_per_s"], r["threads"]))
    if r["bench"] == "read_fashion_mnist_train_gz":
        print("read Fashion-MNIST train .gz: %.2f s for %d images" % (r["seconds"], r["images"]))
PY
rm -f "$out"
