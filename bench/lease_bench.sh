#!/usr/bin/env bash
# Lease throughput through dfkd-scheduler's gRPC API against a raw
# `FOR UPDATE SKIP LOCKED` dequeue run by pgbench, on the same fresh
# PostgreSQL, in one run. Target: the API reaches at least half the raw rate.
#   bash bench/lease_bench.sh [BUILD_DIR] [RUNS] [CLIENTS]
set -euo pipefail
build=${1:-build}
runs=${2:-100000}
clients=${3:-32}
here=$(cd "$(dirname "$0")" && pwd)
pg="$here/../scripts/pg-ephemeral.sh"
dir=$(mktemp -d /tmp/dfkd-lease-bench.XXXXXX)
trap 'bash "$pg" destroy "$dir" >/dev/null 2>&1 || true' EXIT
url=$(bash "$pg" start "$dir")
psql() { runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -q -h "$dir" -p "$(cat "$dir/port")" -d dfkd "$@"; }
pgbench() { runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -h "$dir" -p "$(cat "$dir/port")" "$@"; }

api=$("$build/bin/dfkd-bench-lease" --db "$url" --runs "$runs" --clients "$clients")
echo "$api"

# The raw loop: the same claim the store makes, minus tokens and attempt rows.
psql -c "CREATE TABLE raw_queue (id bigserial PRIMARY KEY, state text NOT NULL, priority int NOT NULL DEFAULT 0, attempt int NOT NULL DEFAULT 0);
         CREATE INDEX raw_queue_lease ON raw_queue (priority DESC, id) WHERE state = 'queued';
         INSERT INTO raw_queue (state) SELECT 'queued' FROM generate_series(1, $runs);"
psql -c "VACUUM ANALYZE raw_queue;"
cat >"$dir/dequeue.sql" <<'SQL'
WITH c AS (SELECT id FROM raw_queue WHERE state = 'queued' ORDER BY priority DESC, id
           LIMIT 1 FOR UPDATE SKIP LOCKED)
UPDATE raw_queue q SET state = 'leased', attempt = q.attempt + 1 FROM c WHERE q.id = c.id RETURNING q.id;
SQL
chown postgres "$dir/dequeue.sql"
per_client=$((runs / clients))
raw=$(pgbench -n -c "$clients" -j 2 -t "$per_client" -f "$dir/dequeue.sql" dfkd 2>&1)
raw_tps=$(echo "$raw" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
raw_lat=$(echo "$raw" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
leased=$(psql -tA -c "SELECT count(*) FROM raw_queue WHERE state = 'leased'")
echo "{\"bench\": \"raw_skip_locked\", \"clients\": $clients, \"leases\": $leased, \"leases_per_second\": $raw_tps, \"latency_avg_ms\": $raw_lat}"
api_rate=$(echo "$api" | python3 -c 'import sys,json; [print(json.loads(l)["leases_per_second"]) for l in sys.stdin if "\"lease\"" in l]')
python3 - "$api_rate" "$raw_tps" <<'PY'
import sys
api, raw = float(sys.argv[1]), float(sys.argv[2])
print("API %.0f leases/s vs raw SKIP LOCKED %.0f/s: ratio %.2f (target >= 0.5: %s)"
      % (api, raw, api / raw, "met" if api / raw >= 0.5 else "MISSED"))
PY
