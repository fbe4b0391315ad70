#!/usr/bin/env bash
# The main job: a local dfkd cluster (private PostgreSQL, dfkd-scheduler, two
# dfkd-worker daemons) runs the Fashion-MNIST KDCI campaign
# (configs/campaigns/fmnist_demo.json: a teacher, then two DFKD methods with
# and without KDCI, two seeds each) and prints the paper-style table.
#   bash scripts/demo.sh BUILD_DIR [CAMPAIGN]
# The cluster keeps running afterwards (`build/bin/dfkd down` stops it); its
# data lives in the user's data folder (see `dfkd --help`), so running the demo
# again reuses every finished run and prints the table at once.
set -euo pipefail
build=${1:-build}
campaign=${2:-configs/campaigns/fmnist_demo.json}
dfkd="$build/bin/dfkd"
start=$(date +%s)

echo "== dfkd up: a local cluster with 2 workers"
"$dfkd" up --workers 2

echo "== dfkd submit $campaign"
id=$("$dfkd" submit "$campaign" --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["campaign_id"])')
echo "campaign $id submitted; following it (dfkd watch $id)"
"$dfkd" watch "$id"

echo
echo "== dfkd results $id"
"$dfkd" results "$id"
echo
"$dfkd" results "$id" --format markdown
echo
echo "demo wall time: $(( $(date +%s) - start )) s (the cluster keeps running: '$dfkd down' stops it)"
