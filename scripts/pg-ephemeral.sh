#!/usr/bin/env bash
# An ephemeral PostgreSQL 15 for tests and local clusters (~0.7 s to start).
#
#   pg-ephemeral.sh start DIR      create (first time) and start a cluster in DIR,
#                                  print its URL on stdout
#   pg-ephemeral.sh stop DIR       stop it (DIR stays, so data survives)
#   pg-ephemeral.sh destroy DIR    stop it and delete DIR
#   pg-ephemeral.sh run -- CMD...  start a throw-away cluster, run CMD with
#                                  DFKD_TEST_POSTGRES_URL set, stop and delete it,
#                                  exit with CMD's status
#
# Trust auth on 127.0.0.1 and a private socket folder; fsync off (test data).
# initdb refuses to run as root, so as root the server runs as user postgres.
set -euo pipefail

PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBIN/initdb" ] || { echo "pg-ephemeral: no PostgreSQL server found (run scripts/install-deps.sh)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local dir=$1
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  if [ -f "$dir/port" ] && as_owner "$PGBIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    echo "postgresql://postgres@127.0.0.1:$(cat "$dir/port")/dfkd"; return 0
  fi
  local port tries=0
  while :; do
    port=${PGPORT_FIXED:-$((20000 + RANDOM % 30000))}
    if as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null 2>&1; then
      break
    fi
    tries=$((tries + 1))
    if [ $tries -ge 5 ] || [ -n "${PGPORT_FIXED:-}" ]; then
      echo "pg-ephemeral: server did not start; log:" >&2; tail -20 "$dir/server.log" >&2; exit 1
    fi
  done
  echo "$port" >"$dir/port"
  as_owner "$PGBIN/createdb" -h "$dir" -p "$port" -U postgres dfkd 2>/dev/null || true
  echo "postgresql://postgres@127.0.0.1:$port/dfkd"
}

stop() {
  local dir=$1
  [ -d "$dir/data" ] || return 0
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
  start) start "${2:?usage: pg-ephemeral.sh start DIR}" ;;
  stop) stop "${2:?usage: pg-ephemeral.sh stop DIR}" ;;
  destroy) stop "${2:?usage}"; rm -rf "$2" ;;
  run)
    shift; [ "${1:-}" = "--" ] && shift
    dir=$(mktemp -d /tmp/dfkd-pg.XXXXXX)
    trap 'stop "$dir"; rm -rf "$dir"' EXIT
    DFKD_TEST_POSTGRES_URL=$(start "$dir")
    export DFKD_TEST_POSTGRES_URL
    set +e; "$@"; rc=$?; set -e
    exit $rc ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
