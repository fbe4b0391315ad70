#!/usr/bin/env bash
# `dfkd pool` at the default 100,000 patches from visp-images-data's images,
# for Fashion-MNIST's 1x28x28 and CIFAR's 3x32x32: build seconds, file size,
# peak RSS, sources used. The 1x28x28 pool is built a second time (same seed)
# and must be byte-identical. Target: each build well under a minute.
#   bash bench/pool_build_bench.sh [BUILD_DIR] [COUNT]
set -euo pipefail
build=${1:-build}
count=${2:-100000}
dfkd="$build/bin/dfkd"
dir=$(mktemp -d /tmp/dfkd-pool-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT

build_pool() {   # shape out
  /usr/bin/time -f '%M' -o "$dir/rss" \
    "$dfkd" pool --output json --shape "$1" --count "$count" --seed 0 --out "$2" 2>"$dir/stderr" \
    >"$dir/summary" || { cat "$dir/stderr" >&2; exit 1; }
  /usr/bin/python3 - "$dir/summary" "$(tail -n 1 "$dir/rss")" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"bench": "pool_build", "shape": "x".join(map(str, s["shape"])),
                  "count": s["count"], "seconds": round(s["seconds"], 2), "bytes": s["bytes"],
                  "mb": round(s["bytes"] / 1e6, 1), "peak_rss_mb": round(int(sys.argv[2]) / 1024),
                  "sources_used": s["sources_used"], "files_found": s["files_found"],
                  "duplicates_skipped": s["duplicates_skipped"],
                  "capped_skipped": s["capped_skipped"],
                  "patches_per_second": round(s["count"] / s["seconds"]),
                  "pixels_fnv1a64": s["pixels_fnv1a64"]}))
PY
}

build_pool 1x28x28 "$dir/fmnist.bin"
build_pool 3x32x32 "$dir/cifar.bin"
build_pool 1x28x28 "$dir/fmnist_again.bin"
if cmp -s "$dir/fmnist.bin" "$dir/fmnist_again.bin"; then
  echo '{"bench": "pool_build_determinism", "identical": true}'
else
  echo '{"bench": "pool_build_determinism", "identical": false}'
  exit 1
fi
