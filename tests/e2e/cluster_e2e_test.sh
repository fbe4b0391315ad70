#!/usr/bin/env bash
# The main job end to end, on loopback: `dfkd up` (private PostgreSQL,
# scheduler, two workers, a real Prometheus), then through the CLI:
#   1. an instant campaign runs to a results table; `results --format json`
#      matches what PostgreSQL holds;
#   2. Prometheus scraped the scheduler and both workers and answers a query
#      for a dfkd_train_ series;
#   3. a worker killed with SIGKILL mid-run: the run resumes on the other
#      worker from its checkpoint and ends with the weights of an
#      uninterrupted run;
#   4. cancel stops a running run (its dfkd-train child exits); SIGTERM makes
#      a worker checkpoint and hand its run back without spending an attempt;
#   5. the scheduler killed with SIGKILL mid-campaign and restarted: the
#      campaign finishes, no run lost or run twice;
#   6. runs with dist.world_size 2 are leased to a gang of two workers whose
#      dfkd-train ranks train together over Gloo.
# Waits are bounded polls on observable state, never fixed sleeps.
#   cluster_e2e_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
dfkd="$build/bin/dfkd"
export DFKD_HOME=$(mktemp -d /tmp/dfkd-e2e.XXXXXX)
chmod 755 "$DFKD_HOME"
work="$DFKD_HOME/test"
mkdir -p "$work"
restarted_pid=""
extra_worker=""
gang_worker=""
cleanup() {
  "$dfkd" down --timeout 10 >/dev/null 2>&1 || true
  [ -n "$restarted_pid" ] && kill -9 "$restarted_pid" 2>/dev/null || true
  [ -n "$extra_worker" ] && kill -9 "$extra_worker" 2>/dev/null || true
  [ -n "$gang_worker" ] && kill -9 "$gang_worker" 2>/dev/null || true
  rm -rf "$DFKD_HOME"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$DFKD_HOME"/logs/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
step() { echo "== $*"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND (0.2 s apart) until it succeeds.
wait_for() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${limit}s waiting for: $what"
    sleep 0.2
  done
}
cluster() {  # cluster FIELD: a field of the cluster.json that `dfkd up` wrote
  python3 -c "import json; print(json.load(open('$DFKD_HOME/cluster.json'))['$1'])"
}
start_worker() {  # start_worker N: one more dfkd-worker, local-N; its pid in started_pid
  "$build/bin/dfkd-worker" --scheduler "$(cluster scheduler_addr)" \
    --token-file "$DFKD_HOME/tokens/worker" --name "local-$1" --threads 1 \
    >>"$DFKD_HOME/logs/worker-$1.log" 2>&1 &
  started_pid=$!
}
run_field() {  # run_field CAMPAIGN RUN_ID PYEXPR-on-r
  "$dfkd" ls runs --campaign "$1" --output json | python3 -c "
import json,sys
runs={r['id']: r for r in json.load(sys.stdin)}
r=runs[$2]
print($3)"
}

step "dfkd up: 2 workers, Prometheus, 3 s leases"
"$dfkd" up --workers 2 --threads 1 --prometheus --lease-seconds 3 || fail "dfkd up"
"$dfkd" status >/dev/null || fail "dfkd status after up"

step "1. instant campaign through the CLI"
"$dfkd" submit "$src/tests/configs/campaigns/instant_campaign.json" --wait >"$work/submit.out" \
  || { cat "$work/submit.out"; fail "submit --wait"; }
grep -q "5 succeeded" "$work/submit.out" || fail "not all 5 runs succeeded: $(cat "$work/submit.out")"
"$dfkd" results 1 >"$work/table.txt" || fail "results"
grep -q "Teacher" "$work/table.txt" && grep -q "noise" "$work/table.txt" || fail "table: $(cat "$work/table.txt")"
"$dfkd" results 1 --format json >"$work/results.json" || fail "results --format json"
db=$(cluster db_url)
psql -At "$db" -c \
  "SELECT e.name, (r.result->>'test_top1') FROM runs r JOIN experiments e ON e.id = r.experiment_id
   WHERE r.campaign_id = 1 AND r.state = 'succeeded'" >"$work/db.txt" 2>/dev/null \
  || fail "cannot query PostgreSQL"
python3 - "$work/results.json" "$work/db.txt" <<'PY' || fail "results json does not match the database"
import json, statistics, sys
res = json.load(open(sys.argv[1]))
db = {}
for line in open(sys.argv[2]):
    name, value = line.strip().split("|")
    db.setdefault(name, []).append(float(value))
cells = {}
for row in res["rows"]:
    for side in ("baseline", "kdci"):
        c = row.get(side)
        if c: cells[c["name"]] = c
assert set(cells) == set(db), (sorted(cells), sorted(db))
for name, values in db.items():
    c = cells[name]
    assert c["n"] == len(values), (name, c, values)
    assert abs(c["mean"] - statistics.mean(values)) < 1e-9, (name, c, values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    assert abs(c["std"] - std) < 1e-9, (name, c, values)
print("results json matches %d cells in PostgreSQL" % len(db))
PY

step "2. Prometheus scrapes the scheduler and both workers"
prom=$(cluster prometheus_url)
prom_targets_up() {
  curl -sf "$prom/api/v1/query?query=up" | python3 -c "
import json,sys
r=json.load(sys.stdin)['data']['result']
assert sum(1 for x in r if x['value'][1]=='1') >= 3, r"
}
prom_train_series() {
  curl -sf "$prom/api/v1/query?query=dfkd_train_steps_total" | python3 -c "
import json,sys
r=json.load(sys.stdin)['data']['result']
assert any(x['metric'].get('method')=='noise' and float(x['value'][1])>0 for x in r), r"
}
wait_for 60 "Prometheus: 3 targets up" prom_targets_up
wait_for 60 "Prometheus: a dfkd_train_steps_total series" prom_train_series
echo "Prometheus answers dfkd_train_steps_total"

step "3. a worker killed with SIGKILL mid-run resumes elsewhere from its checkpoint"
python3 - "$src/tests/configs/campaigns/instant_campaign.json" "$work/long.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "worker-kill"
c["seeds"] = [0]
t = c["teachers"]["t"]
t["seed"] = 11
t["train"]["max_steps"] = 60
t["train"]["checkpoint_every_steps"] = 5
t["data"]["train_limit"] = 2048
json.dump(c, open(sys.argv[2], "w"))
PY
"$dfkd" submit "$work/long.json" >/dev/null || fail "submit worker-kill"
teacher=$("$dfkd" ls runs --campaign 2 --output json | json "[r['id'] for r in d if r['kind']=='train_teacher'][0]")
past_checkpoint() { [ "$(run_field 2 "$teacher" "r['progress'] >= 0.25 and r['state']=='running'")" = True ]; }
wait_for 120 "teacher run $teacher past its first checkpoint" past_checkpoint
holder=$(run_field 2 "$teacher" "r['worker']")
pid=$(python3 -c "
import json; c=json.load(open('$DFKD_HOME/cluster.json'))
print([w['pid'] for w in c['workers'] if 'local-'+str(w['name']).split('-')[-1]=='$holder' or w['name']=='$holder'][0])")
echo "killing $holder (pid $pid) while it trains run $teacher"
kill -9 "$pid"
"$dfkd" watch 2 >"$work/watch2.out" || { cat "$work/watch2.out"; fail "worker-kill campaign did not finish"; }
[ "$(run_field 2 "$teacher" "r['attempt']")" = 2 ] || fail "run $teacher: expected a second attempt"
[ "$(run_field 2 "$teacher" "r['worker']")" != "$holder" ] || fail "run $teacher finished on the killed worker"
first_step=$("$dfkd" logs "$teacher" --output json | python3 -c "
import json,sys
pts=[p for p in json.load(sys.stdin) if p.get('attempt')==2 and p['name']=='progress']
print(min(p['step'] for p in pts))")
[ "$first_step" -gt 5 ] || fail "attempt 2 started at step $first_step: it did not resume from a checkpoint"
run_field 2 "$teacher" "json.dumps(r['spec'])" >"$work/teacher_spec.json"
"$build/bin/dfkd-train" -q "$work/teacher_spec.json" -o "$work/uninterrupted" --threads 1 >/dev/null \
  || fail "uninterrupted dfkd-train"
cmp "$DFKD_HOME/artifacts/runs/$teacher/model.pt" "$work/uninterrupted/model.pt" \
  || fail "weights after the kill differ from an uninterrupted run"
echo "run $teacher resumed at step $first_step on another worker; weights equal the uninterrupted run's"

step "4. cancel stops a running run"
python3 - "$work/long.json" "$work/cancel.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "cancel"
c["teachers"]["t"]["seed"] = 12
c["teachers"]["t"]["train"]["max_steps"] = 100000
c["teachers"]["t"]["train"]["epochs"] = 2000
json.dump(c, open(sys.argv[2], "w"))
PY
"$dfkd" submit "$work/cancel.json" >/dev/null || fail "submit cancel"
victim=$("$dfkd" ls runs --campaign 3 --output json | json "[r['id'] for r in d if r['kind']=='train_teacher'][0]")
is_running() { [ "$(run_field 3 "$victim" "r['state']=='running' and r['progress']>0")" = True ]; }
wait_for 120 "run $victim running" is_running
"$dfkd" cancel --run "$victim" >/dev/null || fail "dfkd cancel --run"
child_gone() { ! pgrep -f "runs/$victim/spec.json" >/dev/null; }
wait_for 30 "dfkd-train of run $victim to exit" child_gone
[ "$(run_field 3 "$victim" "r['state']")" = cancelled ] || fail "run $victim is not cancelled"
echo "run $victim cancelled; its dfkd-train exited"

step "4b. SIGTERM: a worker checkpoints and hands its run back without spending an attempt"
# A third worker replaces the one killed in step 3.
start_worker 3
extra_worker=$started_pid
python3 - "$work/long.json" "$work/handback.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "hand-back"
c["teachers"]["t"]["seed"] = 13
json.dump(c, open(sys.argv[2], "w"))
PY
"$dfkd" submit "$work/handback.json" >/dev/null || fail "submit hand-back"
handed=$("$dfkd" ls runs --campaign 4 --output json | json "[r['id'] for r in d if r['kind']=='train_teacher'][0]")
past_checkpoint4() { [ "$(run_field 4 "$handed" "r['progress'] >= 0.25 and r['state']=='running'")" = True ]; }
wait_for 120 "run $handed past its first checkpoint" past_checkpoint4
holder=$(run_field 4 "$handed" "r['worker']")
if [ "$holder" = local-3 ]; then hpid=$extra_worker; else
  hpid=$(python3 -c "
import json; c=json.load(open('$DFKD_HOME/cluster.json'))
print([w['pid'] for w in c['workers'] if 'local-'+str(w['name']).split('-')[-1]=='$holder'][0])"); fi
kill -TERM "$hpid"
wait_for 60 "$holder to exit after SIGTERM" bash -c "! kill -0 $hpid 2>/dev/null"
"$dfkd" watch 4 >"$work/watch4.out" || { cat "$work/watch4.out"; fail "hand-back campaign did not finish"; }
[ "$(run_field 4 "$handed" "r['attempt']")" = 2 ] || fail "run $handed: expected a second attempt"
[ "$(run_field 4 "$handed" "r['max_attempts']")" = 4 ] || fail "run $handed: the handed-back attempt was counted"
[ "$(run_field 4 "$handed" "r['last_error']")" = "" ] || fail "run $handed: hand-back recorded as an error"
echo "run $handed handed back by $holder on SIGTERM and finished elsewhere; no attempt spent"

step "5. the scheduler killed with SIGKILL mid-campaign and restarted"
python3 - "$src/tests/configs/campaigns/instant_campaign.json" "$work/restart.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "restart"
c["seeds"] = [21, 22, 23]
json.dump(c, open(sys.argv[2], "w"))
PY
"$dfkd" submit "$work/restart.json" >/dev/null || fail "submit restart"
some_done() { "$dfkd" ls runs --campaign 5 --output json | python3 -c "
import json,sys; d=json.load(sys.stdin)
assert sum(r['state']=='succeeded' for r in d) >= 2 and any(r['state'] in ('queued','leased','running') for r in d)"; }
wait_for 120 "campaign 5 part done" some_done
read -r sport spid < <(python3 -c "
import json; c=json.load(open('$DFKD_HOME/cluster.json'))['scheduler']; print(c['port'], c['pid'])")
kill -9 "$spid"
"$build/bin/dfkd-scheduler" --db "$db" --listen "127.0.0.1:$sport" --metrics-listen 127.0.0.1:0 \
  --artifact-root "$DFKD_HOME/artifacts" --lease-seconds 3 >>"$DFKD_HOME/logs/scheduler.log" 2>&1 &
restarted_pid=$!
wait_for 30 "the restarted scheduler to answer" "$dfkd" ls
"$dfkd" watch 5 >"$work/watch5.out" || { cat "$work/watch5.out"; fail "campaign 5 did not finish after the restart"; }
"$dfkd" ls runs --campaign 5 --output json | python3 -c "
import json,sys; d=json.load(sys.stdin)
assert all(r['state']=='succeeded' for r in d), [(r['id'], r['state']) for r in d]
assert all(r['attempt'] <= 1 for r in d), [(r['id'], r['attempt']) for r in d]
print('campaign 5: %d runs succeeded, none run twice' % len(d))" || fail "campaign 5 runs"

step "6. dist.world_size 2: a gang of two workers trains each distill run"
# Steps 3 and 4b took two workers away; a fourth makes two again.
start_worker 4
gang_worker=$started_pid
python3 - "$src/tests/configs/campaigns/instant_campaign.json" "$work/gang.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "gang"
c["seeds"] = [31]
c["base"]["dist"] = {"world_size": 2}
json.dump(c, open(sys.argv[2], "w"))
PY
# Bounded, so a gang that never forms fails here with the logs, not at
# ctest's timeout.
timeout 300 "$dfkd" submit "$work/gang.json" --wait >"$work/gang.out" \
  || { cat "$work/gang.out"; "$dfkd" ls runs --campaign 6 || true; fail "gang campaign did not finish within 300 s"; }
"$dfkd" ls runs --campaign 6 --output json | python3 -c "
import json, os, sys
d = json.load(sys.stdin)
assert all(r['state'] == 'succeeded' for r in d), [(r['id'], r['state']) for r in d]
gangs = [r for r in d if r['kind'] == 'distill']
assert len(gangs) == 2 and all(r['world_size'] == 2 for r in gangs), [(r['id'], r['world_size']) for r in d]
for r in gangs:
    res = r['result'] if isinstance(r['result'], dict) else json.loads(r['result'])
    assert res['world_size'] == 2, (r['id'], res.get('world_size'))
print('campaign 6: %d distill runs each trained by a gang of 2 ranks' % len(gangs))" || fail "campaign 6 runs"
echo "PASS"
