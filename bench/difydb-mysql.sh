#!/usr/bin/env bash
# The database source on MariaDB (the MySQL dialect) against the floor of reading the same rows once with
# the `mariadb` client, in the same local server and the same run: the counterpart of bench/difydb.sh.
# Prints the floor, the exporter's wall time (median of 3), their ratio and the exporter's peak RSS.
#
# The world is the Dify simulator's (dify-sim --write-rows, as DATA=sim in bench/difydb.sh): 10 workflow and
# advanced-chat apps and 10 chat and agent-chat apps over 7 days with RUNS/70 runs (and as many messages) per
# app and day. Its COPY blocks are loaded with LOAD DATA (the same text format), the way Dify writes them
# on MySQL: booleans as 1/0, messages' created_at in the server's local time (the server runs at Tokyo time,
# so every message is converted back to UTC while reading), runs and nodes in UTC.
# Needs: mariadb-server and mariadb-client (apt-get install), GNU time, bc, python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-250000}
cargo build --release --locked --workspace --bins >/dev/null 2>&1
BIN="$PWD/target/release"
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=$(id -un)
[ "$(id -u)" -eq 0 ] && user=mysql && chown mysql "$WORK"
mkdir "$WORK/tmp" && chown "$user" "$WORK/tmp"
TMPDIR="$WORK/tmp" mariadb-install-db --no-defaults --auth-root-authentication-method=normal \
  --datadir="$WORK/data" --user="$user" --skip-test-db >/dev/null
TZ=Asia/Tokyo TMPDIR="$WORK/tmp" /usr/sbin/mariadbd --no-defaults --datadir="$WORK/data" --user="$user" \
  --socket="$WORK/sock" --port="$PORT" --bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin \
  --innodb-buffer-pool-size=1G --innodb-flush-log-at-trx-commit=0 --local-infile=1 \
  >"$WORK/server.log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$WORK"' EXIT
MARIADB=(mariadb --no-defaults --socket="$WORK/sock" -u root --batch --skip-column-names --local-infile=1)
for _ in $(seq 600); do "${MARIADB[@]}" -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
"${MARIADB[@]}" -e "CREATE DATABASE dify; CREATE USER 'bench'@'%' IDENTIFIED BY 'bench-password';
  GRANT SELECT ON dify.* TO 'bench'@'%';"
"${MARIADB[@]}" dify <tests/data/dify-schema-mysql.sql

first=$(date -u -d '9 days ago' +%F)
last=$(date -u -d '3 days ago' +%F)
load_start=$(date +%s.%N)
# One file per COPY block, then LOAD DATA with the block's columns.
cat >"$WORK/split.py" <<'PY'
import re, sys
work = sys.argv[1]
out = None
for line in sys.stdin:
    if out is None:
        m = re.match(r"COPY (\w+) \((.*)\) FROM STDIN;", line)
        if not m:
            continue
        table, columns = m.group(1), m.group(2).split(", ")
        out = open(f"{work}/{table}.tsv", "w")
        names, sets = [], []
        for c in columns:
            if c in ("is_deleted", "is_anonymous"):
                names.append(f"@{c}")
                sets.append(f"`{c}` = (@{c} = 't')")
            elif table == "messages" and c in ("created_at", "updated_at"):
                names.append(f"@{c}")
                sets.append(f"`{c}` = CONVERT_TZ(@{c}, '+00:00', @@session.time_zone)")
            else:
                names.append(f"`{c}`")
        load = f"LOAD DATA LOCAL INFILE '{work}/{table}.tsv' INTO TABLE {table} (" + ", ".join(names) + ")"
        if sets:
            load += " SET " + ", ".join(sets)
        with open(f"{work}/load.sql", "a") as sql:
            sql.write(load + ";\n")
    elif line == "\\.\n":
        out.close()
        out = None
    else:
        out.write(line)
PY
"$BIN/dify-sim" --write-rows --seed 8 --first-day "$first" --days 7 --apps-per-mode 5 \
  --runs-per-app-per-day $((RUNS / 70)) --modes workflow,advanced-chat,chat,agent-chat |
  python3 "$WORK/split.py" "$WORK"
"${MARIADB[@]}" dify <"$WORK/load.sql"
"${MARIADB[@]}" dify -e "ANALYZE TABLE messages, workflow_runs, workflow_node_executions" >/dev/null
printf 'loaded in %.1f s: %s MiB\n' "$(echo "$(date +%s.%N) - $load_start" | bc)" \
  "$("${MARIADB[@]}" -e "SELECT ROUND(SUM(data_length + index_length) / 1048576) FROM information_schema.TABLES WHERE table_schema = 'dify'")"

# The floor: every row the exporter reads, read once by the server, nothing sent back but a count.
floor_sql="SELECT COUNT(*), SUM(LENGTH(n.process_data)), SUM(LENGTH(n.execution_metadata))
  FROM workflow_node_executions n JOIN workflow_runs r ON r.id = n.workflow_run_id
  WHERE r.created_at >= '$first' AND r.created_at < '$last' + INTERVAL 1 DAY
    AND r.triggered_from NOT IN ('debugging', 'rag-pipeline-run', 'rag-pipeline-debugging')
    AND n.triggered_from = 'workflow-run';
SELECT COUNT(*), SUM(message_tokens) FROM messages
  WHERE created_at >= CONVERT_TZ('$first', '+00:00', @@session.time_zone)
    AND created_at < CONVERT_TZ('$last' + INTERVAL 1 DAY, '+00:00', @@session.time_zone)
    AND invoke_from <> 'debugger'
    AND app_id IN (SELECT id FROM apps WHERE mode NOT IN ('workflow', 'advanced-chat'));"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
floors=()
for _ in 1 2 3; do
  s=$(date +%s.%N)
  "${MARIADB[@]}" dify -e "$floor_sql" >"$WORK/floor.out"
  floors+=("$(echo "$(date +%s.%N) - $s" | bc)")
done
floor=$(printf '%s\n' "${floors[@]}" | median)
echo "floor rows: $(tr '\n' ' ' <"$WORK/floor.out")"

walls=()
rss=0
for _ in 1 2 3; do
  /usr/bin/time -f "%M %e" -o "$WORK/time" env -i \
    DIFY_DATABASE_URL="mysql://bench:bench-password@127.0.0.1:$PORT/dify?sslmode=disable" \
    EXTERNAL_API_URL=http://127.0.0.1:9/usage EXTERNAL_API_TOKEN=unused-token LOG_LEVEL=warn \
    "$BIN/exporter" run --dry-run --from "$first" --to "$last" >"$WORK/exporter.records"
  read -r kib secs <"$WORK/time"
  walls+=("$secs")
  [ "$kib" -gt "$rss" ] && rss=$kib
done
wall=$(printf '%s\n' "${walls[@]}" | median)
printf 'mariadb %s: records %d  floor %.2f s  exporter %.2f s (runs: %s)  ratio %.2f  peak RSS %.1f MiB\n' \
  "$(/usr/sbin/mariadbd --version | awk '{print $3}')" "$(wc -l <"$WORK/exporter.records")" "$floor" "$wall" \
  "${walls[*]}" "$(echo "$wall / $floor" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
