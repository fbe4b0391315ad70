#!/usr/bin/env bash
# The main job, as it stands: train the Fashion-MNIST teacher and a scratch
# student with dfkd-train (resuming if interrupted), then print their
# accuracies as the first rows of the paper's table.
#   bash scripts/demo.sh BUILD_DIR RUNS_DIR
set -euo pipefail
build=${1:-build}
runs=${2:-runs}
bin="$build/bin/dfkd-train"
specs=(configs/fashion_mnist/teacher.json configs/fashion_mnist/scratch_student.json)
start=$(date +%s)
for spec in "${specs[@]}"; do
  name=$(basename "$spec" .json)
  echo "== $name: $spec"
  "$bin" "$spec" -o "$runs/demo/$name"
done
/usr/bin/python3 - "$runs/demo" "$(( $(date +%s) - start ))" <<'PY'
import json, os, sys
root, secs = sys.argv[1], int(sys.argv[2])
print("\nFashion-MNIST (real test set, 10,000 images)")
print("| row | network | params | test top-1 | best top-1 | train time |")
print("|---|---|---|---|---|---|")
for row, name in [("Teacher", "teacher"), ("Student (scratch)", "scratch_student")]:
    r = json.load(open(os.path.join(root, name, "result.json")))
    print("| %s | %s | %s | %.2f | %.2f | %.0f s |" % (row, r["model"], f'{r["parameters"]:,}',
          r["test_top1"], r["best_test_top1"], r["train_seconds"]))
print("\ndemo wall time: %d s" % secs)
PY
