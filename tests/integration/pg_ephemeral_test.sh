#!/usr/bin/env bash
# Starts a throw-away PostgreSQL with the helper, writes and reads a row over
# TCP, and checks the cluster is gone afterwards.
set -euo pipefail
helper=$1
out=$(bash "$helper" run -- bash -c '
  psql "$DFKD_TEST_POSTGRES_URL" -qtA -c "create table t(x int); insert into t values (41); select x + 1 from t;"
  echo "dir=$(dirname "$(psql "$DFKD_TEST_POSTGRES_URL" -qtA -c "show data_directory")")"')
echo "$out"
echo "$out" | grep -qx 42 || { echo "FAIL: expected 42 from the server"; exit 1; }
dir=$(echo "$out" | sed -n 's/^dir=//p')
[ -n "$dir" ] && [ ! -e "$dir" ] || { echo "FAIL: cluster folder $dir not removed"; exit 1; }
echo "1 passed, 0 failed"
