#!/usr/bin/env bash
# Issue 4 benchmark: the whole export against both simulators without added delay: 30 days x 50 apps
# (20 of them workflow/advanced-chat with 333 runs a day: about 200,000 workflow runs). Prints wall time,
# records per second through collection, aggregation, queueing and delivery, the delivery phase alone,
# peak RSS and the state database's size. Needs: apt-get install time curl.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
days=${DAYS:-30}
first=$(date -u -d "$days days ago" +%F)
start_dify --apps-per-mode 10 --days "$days" --first-day "$first" --runs-per-app-per-day "${RUNS:-333}" --seed 4
start_meter
state="$WORK/state"
read -r rss secs < <(measure "$WORK/run.log" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD" \
    EXTERNAL_API_URL="$EXTERNAL_API_URL" EXTERNAL_API_TOKEN=bench-token STATE_DIR="$state" DIFY_FETCH_DAYS="$days" \
    "$BIN/exporter" run)
python3 - "$WORK/run.log" "$rss" "$secs" "$state/state.db" "$DIFY_BASE" "$METER_BASE" <<'PY'
import json, os, sys, urllib.request
from datetime import datetime
log, rss, secs, db, dify, meter = sys.argv[1:]
lines = [json.loads(l) for l in open(log)]
at = lambda m: datetime.fromisoformat(next(l for l in lines if l["message"] == m)["timestamp"].replace("Z", "+00:00"))
summary = next(l for l in lines if l["message"] == "run finished")["context"]
collected = next(l for l in lines if l["message"] == "usage collected")["context"]
delivery = (at("run finished") - at("records queued")).total_seconds()
dify_stats = json.load(urllib.request.urlopen(dify + "/_sim/stats"))
held = json.load(urllib.request.urlopen(meter + "/_meter/stats"))
print(f"outcome {summary['outcome']}  runs {collected['runs']}  nodes {collected['nodes_counted']}  records {summary['records']}  batches {summary['batches_sent']}")
print(f"wall {float(secs):.1f} s  ({summary['records'] / float(secs):.0f} records/s end to end, {collected['runs'] / float(secs):.0f} runs/s)")
print(f"delivery of {summary['records_sent']} records: {delivery:.2f} s ({summary['records_sent'] / max(delivery, 1e-9):.0f} records/s)")
print(f"peak RSS {rss} MiB  state database {os.path.getsize(db) / 1048576:.1f} MiB  Dify requests {dify_stats['requests_total']}  meter holds {held['records_inserted']} records")
PY
