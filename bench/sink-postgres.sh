#!/usr/bin/env bash
# The postgres sink: about 100,000 ledger rows over 30 days (30 apps per mode, 150 runs per app and
# day) collected from the Dify simulator and upserted into a throwaway PostgreSQL cluster. Prints
# wall time, the delivery phase alone (rows/s), peak RSS and the rows the table holds.
# Needs: apt-get install time postgresql.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
days=${DAYS:-30}
first=$(date -u -d "$days days ago" +%F)
start_postgres
start_dify --apps-per-mode "${APPS:-30}" --days "$days" --first-day "$first" --runs-per-app-per-day "${RUNS:-150}" --seed 4
read -r rss secs < <(measure "$WORK/run.log" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD" \
    SINK_POSTGRES_URL="$POSTGRES_URL" \
    BATCH_SIZE="${BATCH_SIZE:-500}" STATE_DIR="$WORK/state" DIFY_FETCH_DAYS="$days" "$BIN/exporter" run)
rows=$(as_pg "$PGBIN/psql" -X -A -t -h "$WORK/pg" -p "$PGPORT" -U postgres -c "SELECT count(*) FROM dify_usage")
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
