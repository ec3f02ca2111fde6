#!/usr/bin/env bash
# Issue 8 benchmark: the database source against the floor of reading the same rows once with psql, in
# the same local PostgreSQL and the same run. Prints the floor, the exporter's wall time (median of 3),
# their ratio and the exporter's peak RSS.
#
# DATA=sim (default): the Dify simulator's world written as rows (dify-sim --write-rows): 10 workflow and
#   advanced-chat apps and 10 chat and agent-chat apps over a 7-day window with RUNS/70 runs (and as many
#   messages) per app and day; the simulator's own node shapes (small process_data), plus its debug runs,
#   single-step nodes, RAG pipeline runs and debugger messages, which must not count.
# DATA=sql: bench/difydb-data.sql, generated inside PostgreSQL: RUNS runs of 4 nodes with Dify-sized
#   process_data (about 1.2 KB of prompts and usage per model call) and MESSAGES messages, plus 25 % rows
#   outside the window and debug/debugger rows.
# Measures the exporter with one session (DIFY_DATABASE_CONNECTIONS=1) and with the default of four.
# BASELINE=DIR: also measure DIR/exporter (a release build of another commit) on the same cluster, first,
#   and compare the records the two print.
# Needs: PostgreSQL server binaries (apt-get install postgresql), GNU time, bc, python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DATA=${DATA:-sim}
RUNS=${RUNS:-250000}
MESSAGES=${MESSAGES:-200000}
cargo build --release --locked --workspace --bins >/dev/null 2>&1
BIN="$PWD/target/release"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || PGBIN=$(dirname "$(command -v initdb)")
WORK=$(mktemp -d)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c shared_buffers=512MB" start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$WORK/data" stop -m immediate >/dev/null 2>&1; rm -rf "$WORK"' EXIT
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -U postgres)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE dify"
"${PSQL[@]}" -d dify -f tests/data/dify-schema.sql

first=$(date -u -d '9 days ago' +%F)
last=$(date -u -d '3 days ago' +%F)
load_start=$(date +%s.%N)
if [ "$DATA" = sim ]; then
  "$BIN/dify-sim" --write-rows --seed 8 --first-day "$first" --days 7 --apps-per-mode 5 \
    --runs-per-app-per-day $((RUNS / 70)) --modes workflow,advanced-chat,chat,agent-chat |
    "${PSQL[@]}" -d dify
else
  "${PSQL[@]}" -d dify -v runs="$RUNS" -v messages="$MESSAGES" -v first="$first" -f bench/difydb-data.sql
fi
"${PSQL[@]}" -d dify -c "VACUUM ANALYZE"
printf 'loaded in %.1f s: %s\n' "$(echo "$(date +%s.%N) - $load_start" | bc)" \
  "$("${PSQL[@]}" -d dify -At -c "SELECT pg_size_pretty(pg_database_size('dify'))")"

# The floor: every row the exporter reads, read once by the server, nothing sent back but a count.
floor_sql="SELECT count(*), sum(length(n.process_data)), sum(length(n.execution_metadata))
  FROM workflow_node_executions n JOIN workflow_runs r ON r.id = n.workflow_run_id
  WHERE r.created_at >= '$first' AND r.created_at < '$last'::date + 1
    AND r.triggered_from NOT IN ('debugging', 'rag-pipeline-run', 'rag-pipeline-debugging')
    AND n.triggered_from = 'workflow-run';
SELECT count(*), sum(message_tokens) FROM messages
  WHERE created_at >= '$first' AND created_at < '$last'::date + 1 AND invoke_from <> 'debugger'
    AND app_id IN (SELECT id FROM apps WHERE mode NOT IN ('workflow', 'advanced-chat'));"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
floors=()
for _ in 1 2 3; do
  s=$(date +%s.%N)
  "${PSQL[@]}" -d dify -At -c "$floor_sql" >"$WORK/floor.out"
  floors+=("$(echo "$(date +%s.%N) - $s" | bc)")
done
floor=$(printf '%s\n' "${floors[@]}" | median)
echo "floor rows: $(tr '\n' ' ' <"$WORK/floor.out")"

# The exporter over the window three times: median wall time, peak RSS, the records it printed.
measure() { # BIN_DIR OUT_PREFIX [DIFY_DATABASE_CONNECTIONS]
  local walls=() rss=0 kib secs connections=${3:-4}
  for _ in 1 2 3; do
    /usr/bin/time -f "%M %e" -o "$WORK/time" env -i \
      DIFY_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/dify?sslmode=disable" \
      DIFY_DATABASE_CONNECTIONS="$connections" \
      EXTERNAL_API_URL=http://127.0.0.1:9/usage EXTERNAL_API_TOKEN=unused-token LOG_LEVEL=warn \
      "$1/exporter" run --dry-run --from "$first" --to "$last" >"$WORK/$2.records"
    read -r kib secs <"$WORK/time"
    walls+=("$secs")
    [ "$kib" -gt "$rss" ] && rss=$kib
  done
  wall=$(printf '%s\n' "${walls[@]}" | median)
  printf '%s: records %d  floor %.2f s  exporter %.2f s (runs: %s)  ratio %.2f  peak RSS %.1f MiB\n' \
    "$2" "$(wc -l <"$WORK/$2.records")" "$floor" "$wall" "${walls[*]}" "$(echo "$wall / $floor" | bc -l)" \
    "$(echo "$rss / 1024" | bc -l)"
}
echo "data $DATA"
# BASELINE=DIR (a release build of another commit): measured first on the same cluster, and its records
# compared with this build's.
if [ -n "${BASELINE:-}" ]; then
  measure "$BASELINE" baseline
fi
# One session (the reading before DIFY_DATABASE_CONNECTIONS), then the default of four on one snapshot.
measure "$BIN" one-session 1
measure "$BIN" two-sessions 2
measure "$BIN" exporter
cmp -s "$WORK/one-session.records" "$WORK/exporter.records" &&
  echo "one session and four printed the same records, byte for byte" ||
  echo "one session and four printed DIFFERENT records"
if [ -n "${BASELINE:-}" ]; then
  cmp -s <(sort "$WORK/baseline.records") <(sort "$WORK/exporter.records") &&
    echo "baseline and exporter printed the same records" ||
    echo "baseline and exporter printed DIFFERENT records"
fi

# The console API source on the same kind of world, at 20 ms per request and DIFY_CONCURRENCY=8: measured on
# a world API_RUNS_PER_DAY runs (and messages) per app and day small, then scaled linearly to RUNS (requests
# grow with runs: one node-executions request each, plus list pages).
if [ "$DATA" = sim ]; then
  api_per_day=${API_RUNS_PER_DAY:-36}
  "$BIN/dify-sim" --delay-ms 20 --seed 8 --first-day "$first" --days 7 --apps-per-mode 5 \
    --runs-per-app-per-day "$api_per_day" --modes workflow,advanced-chat,chat,agent-chat >"$WORK/dify.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$WORK/dify.log" 2>/dev/null && break; sleep 0.1; done
  eval "$(grep -E '^  [A-Z_]+=' "$WORK/dify.log" | sed 's/^  /export /')"
  /usr/bin/time -f "%e" -o "$WORK/api.time" env -i DIFY_API_URL="$DIFY_API_URL" DIFY_EMAIL="$DIFY_EMAIL" \
    DIFY_PASSWORD="$DIFY_PASSWORD" EXTERNAL_API_URL=http://127.0.0.1:9/usage EXTERNAL_API_TOKEN=unused-token \
    DIFY_CONCURRENCY=8 LOG_LEVEL=warn "$BIN/exporter" run --dry-run --from "$first" --to "$last" >/dev/null
  requests=$(python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('$DIFY_API_URL/_sim/stats'))['requests_total'])")
  kill "$sim_pid"
  api_wall=$(cat "$WORK/api.time")
  scale=$(echo "($RUNS / 70) / $api_per_day" | bc -l)
  estimate=$(echo "$api_wall * $scale" | bc -l)
  printf 'API source at %d runs/app/day: %d requests in %.1f s (requests x 20 ms / 8 = %.1f s)\n' \
    "$api_per_day" "$requests" "$api_wall" "$(echo "$requests * 0.020 / 8" | bc -l)"
  printf 'API source scaled x%.1f to %d runs/app/day: %.0f s; the database source is %.0fx faster\n' \
    "$scale" $((RUNS / 70)) "$estimate" "$(echo "$estimate / $wall" | bc -l)"
fi
