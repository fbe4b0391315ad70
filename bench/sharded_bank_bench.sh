#!/usr/bin/env bash
# The ImageNet protocol's 1,000-generator bank, run for real by dfkd-train on
# 1 rank and on 2 Gloo ranks: a made-up 1,000-class image folder (one colour
# per class, 32x32), a WRN-16-1 teacher trained on it for a few steps, then
# class_bank distillation with tiny generators (nz 32, ngf 8). Round 0 trains
# every owned class's generator once. Reports per rank: classes owned, peak
# RSS, checkpoint shard size, and the run's time in synthesis+training and in
# writing checkpoints.
#   bash bench/sharded_bank_bench.sh [BUILD_DIR] [CLASSES]
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
classes=${2:-1000}
train="$build/bin/dfkd-train"
dir=$(mktemp -d /tmp/dfkd-bank-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT

python3 - "$dir/data" "$classes" <<'PY'
import os, struct, sys, zlib, random
root, classes = sys.argv[1], int(sys.argv[2])
def png(path, rgb, size=32, jitter=0):
    rnd = random.Random(path)
    rows = b"".join(b"\0" + bytes(max(0, min(255, c + rnd.randint(-jitter, jitter)))
                                  for _ in range(size) for c in rgb) for _ in range(size))
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)
for k in range(classes):
    rgb = ((k * 37) % 256, (k * 91) % 256, (k * 173) % 256)
    for split, n in (("train", 2), ("val", 1)):
        d = os.path.join(root, split, "c%04d" % k)
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            png(os.path.join(d, "%d.png" % i), rgb, jitter=20)
PY

cat >"$dir/teacher.json" <<EOF
{"version": 1, "kind": "train_teacher", "name": "bank bench teacher", "seed": 1,
 "data": {"dataset": "image_folder", "root": "$dir/data", "image_size": 32},
 "model": {"arch": "wrn", "depth": 16, "widen_factor": 1},
 "train": {"epochs": 1, "max_steps": 10, "batch_size": 64, "eval_batch_size": 500,
           "checkpoint_every_steps": 10, "optim": {"lr": 0.05}}}
EOF
"$train" -q "$dir/teacher.json" -o "$dir/teacher" --threads 2 >/dev/null

distill() {  # distill WORLD_SIZE
  cat >"$dir/bank$1.json" <<EOF
{"version": 1, "kind": "distill", "name": "bank bench", "seed": 1,
 "data": {"dataset": "image_folder", "root": "$dir/data", "image_size": 32, "test_limit": 1000},
 "model": {"arch": "wrn", "depth": 16},
 "train": {"epochs": 1, "batch_size": 64, "eval_batch_size": 500, "checkpoint_every_steps": 4,
           "optim": {"lr": 0.05}},
 "distill": {"teacher": {"weights": "$dir/teacher/model.pt", "model": {"arch": "wrn", "depth": 16}},
             "method": "class_bank", "steps_per_epoch": 4, "kd_steps": 4,
             "synthesis_batch_size": 64,
             "class_bank": {"g_steps": 1, "images_per_class": 4, "classes_per_round": 16}},
 "dist": {"world_size": $1}}
EOF
  local out="$dir/out$1" pids=() r
  local port=$((20000 + RANDOM % 20000))
  for ((r = 0; r < $1; r++)); do
    env RANK=$r WORLD_SIZE="$1" LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      /usr/bin/time -f "%M %e" -o "$dir/time$1.$r" \
      "$train" -q "$dir/bank$1.json" -o "$out" --threads $((2 / $1)) >"$dir/log$1.$r" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$dir"/log"$1".*; exit 1; }; done
  python3 - "$out/result.json" "$1" "$dir" "$out" <<'PY'
import glob, json, os, sys
res, world, d, out = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3], sys.argv[4]
m = res["method"]
for r in range(world):
    rss_kb, wall = open(os.path.join(d, "time%d.%d" % (world, r))).read().split()
    shard = sorted(glob.glob(os.path.join(out, "checkpoint.pt.rank%d.step*" % r)))
    main = os.path.join(out, "checkpoint.pt")
    size = os.path.getsize(shard[-1]) if shard else os.path.getsize(main)
    print(json.dumps({"bench": "sharded_bank", "world_size": world, "rank": r,
                      "peak_rss_mb": round(int(rss_kb) / 1024, 1),
                      "bank_state_mb": round(size / 2**20, 1), "wall_s": float(wall)}))
print(json.dumps({"bench": "sharded_bank", "world_size": world, "rank0_class_range":
                  [m["class_begin"], m["class_end"]],
                  "rank0_bank_state_mb": round(m["memory"]["state_bytes"] / 2**20, 1),
                  "steps": res["steps"],
                  "train_seconds": round(res["train_seconds"], 1),
                  "checkpoint_seconds": round(res["checkpoint_seconds"], 2)}))
PY
}
distill 1
distill 2
