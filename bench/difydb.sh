#!/usr/bin/env bash
# Issue 8 benchmark: the database source against the floor of reading the same rows once with psql, in
# the same local PostgreSQL and the same run. The data: RUNS workflow runs with 4 node executions each
# (2 of them model calls with Dify-sized process_data) and MESSAGES chat messages inside a 7-day window,
# plus as many rows again outside it (debug runs, single-step nodes, debugger messages, other days).
# Prints the floor, the exporter's wall time (median of 3), their ratio and the exporter's peak RSS.
# Needs: PostgreSQL server binaries (apt-get install postgresql), GNU time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-250000}
MESSAGES=${MESSAGES:-200000}
cargo build --release --locked --bin exporter >/dev/null 2>&1
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
"${PSQL[@]}" -d dify -v runs="$RUNS" -v messages="$MESSAGES" -v first="$first" -f bench/difydb-data.sql
"${PSQL[@]}" -d dify -c "VACUUM ANALYZE"
printf 'loaded in %.1f s: %s\n' "$(echo "$(date +%s.%N) - $load_start" | bc)" \
  "$("${PSQL[@]}" -d dify -At -c "SELECT pg_size_pretty(pg_database_size('dify'))")"

# The floor: every row the exporter reads, read once by the server, nothing sent back but a count.
floor_sql="SELECT count(*), sum(length(n.process_data)), sum(length(n.execution_metadata))
  FROM workflow_node_executions n JOIN workflow_runs r ON r.id = n.workflow_run_id
  WHERE r.created_at >= '$first' AND r.created_at < '$last'::date + 1
    AND r.triggered_from = 'app-run' AND n.triggered_from = 'workflow-run';
SELECT count(*), sum(message_tokens) FROM messages
  WHERE created_at >= '$first' AND created_at < '$last'::date + 1 AND invoke_from <> 'debugger';"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
floors=()
for _ in 1 2 3; do
  s=$(date +%s.%N)
  "${PSQL[@]}" -d dify -At -c "$floor_sql" >"$WORK/floor.out"
  floors+=("$(echo "$(date +%s.%N) - $s" | bc)")
done
floor=$(printf '%s\n' "${floors[@]}" | median)
echo "floor rows: $(tr '\n' ' ' <"$WORK/floor.out")"

walls=()
rss=0
for _ in 1 2 3; do
  /usr/bin/time -f "%M %e" -o "$WORK/time" env -i \
    DIFY_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/dify?sslmode=disable" \
    EXTERNAL_API_URL=http://127.0.0.1:9/usage EXTERNAL_API_TOKEN=unused LOG_LEVEL=warn \
    "$BIN/exporter" run --dry-run --from "$first" --to "$last" >"$WORK/records"
  read -r kib secs <"$WORK/time"
  walls+=("$secs")
  [ "$kib" -gt "$rss" ] && rss=$kib
done
wall=$(printf '%s\n' "${walls[@]}" | median)
printf 'runs %d  nodes %d  messages %d  records %d\n' "$RUNS" $((RUNS * 4)) "$MESSAGES" "$(wc -l <"$WORK/records")"
printf 'floor %.2f s  exporter %.2f s (runs: %s)  ratio %.2f  peak RSS %.1f MiB\n' \
  "$floor" "$wall" "${walls[*]}" "$(echo "$wall / $floor" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
