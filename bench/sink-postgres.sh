#!/usr/bin/env bash
# The postgres sink: about 100,000 ledger rows over 30 days (30 apps per mode, 150 runs per app and
# day) collected from the Dify simulator and upserted into a throwaway PostgreSQL cluster. Prints
# wall time, the delivery phase alone (rows/s), peak RSS and the rows the table holds.
# Needs: apt-get install time postgresql.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
days=${DAYS:-30}
first=$(date -u -d "$days days ago" +%F)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
chmod 755 "$WORK"; mkdir "$WORK/pg"; [ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
echo bench-password >"$WORK/pg/pw"
as_pg "$pgbin/initdb" -D "$WORK/pg/data" -U postgres --pwfile "$WORK/pg/pw" --auth-host=scram-sha-256 --no-sync >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$pgbin/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -o "-p $port -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
start_dify --apps-per-mode "${APPS:-30}" --days "$days" --first-day "$first" --runs-per-app-per-day "${RUNS:-150}" --seed 4
read -r rss secs < <(measure "$WORK/run.log" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD" \
    SINK_POSTGRES_URL="postgres://postgres:bench-password@127.0.0.1:$port/postgres?sslmode=disable" \
    BATCH_SIZE="${BATCH_SIZE:-500}" STATE_DIR="$WORK/state" DIFY_FETCH_DAYS="$days" "$BIN/exporter" run)
rows=$(as_pg "$pgbin/psql" -X -A -t -h "$WORK/pg" -p "$port" -U postgres -c "SELECT count(*) FROM dify_usage")
python3 - "$WORK/run.log" "$rss" "$secs" "$rows" <<'PY'
import json, sys
from datetime import datetime
log, rss, secs, rows = sys.argv[1:]
lines = [json.loads(l) for l in open(log)]
at = lambda m: datetime.fromisoformat(next(l for l in lines if l["message"] == m)["timestamp"].replace("Z", "+00:00"))
summary = next(l for l in lines if l["message"] == "run finished")["context"]
delivery = (at("run finished") - at("records queued")).total_seconds()
print(f"outcome {summary['outcome']}  records {summary['records']}  batches {summary['batches_sent']}  table rows {rows}")
print(f"wall {float(secs):.1f} s  peak RSS {rss} MiB")
print(f"delivery of {summary['records_sent']} rows: {delivery:.2f} s ({summary['records_sent'] / max(delivery, 1e-9):.0f} rows/s)")
PY
