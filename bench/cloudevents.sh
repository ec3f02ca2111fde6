#!/usr/bin/env bash
# Issue 15 benchmark: over 100,000 ledger rows through the cloudevents sink to `collector-sim` (OpenMeter's
# ingestion rules). The world of bench/e2e.sh's large case (100 days x 50 apps, 150 runs per
# workflow/advanced-chat app and day); the delivery phase is timed from the `records queued` to the `run
# finished` log line (the window is one chunk, so that interval is delivery alone), events per second from
# the collector's own count. Needs: apt-get install time curl.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
days=${DAYS:-100}
first=$(date -u -d "$days days ago" +%F)
start_dify --apps-per-mode 10 --days "$days" --first-day "$first" --runs-per-app-per-day "${RUNS:-150}" --seed 4
"$BIN/collector-sim" --token bench-token-ce >"$WORK/collector.log" 2>&1 &
wait_for_sim "$WORK/collector.log" $!
state="$WORK/state"
read -r rss secs < <(measure "$WORK/run.log" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD" \
    SINK_CLOUDEVENTS_URL="$SINK_CLOUDEVENTS_URL" SINK_CLOUDEVENTS_TOKEN=bench-token-ce STATE_DIR="$state" DIFY_FETCH_DAYS="$days" COLLECT_CHUNK_DAYS="$days" \
    "$BIN/exporter" run)
python3 - "$WORK/run.log" "$rss" "$secs" "${SINK_CLOUDEVENTS_URL%/api/v1/events}/_collector/stats" <<'PY'
import json, sys, urllib.request
from datetime import datetime
log, rss, secs, stats_url = sys.argv[1:]
lines = [json.loads(l) for l in open(log)]
at = lambda m: datetime.fromisoformat(next(l for l in lines if l["message"] == m)["timestamp"].replace("Z", "+00:00"))
summary = next(l for l in lines if l["message"] == "run finished")["context"]
delivery = (at("run finished") - at("records queued")).total_seconds()
stats = json.load(urllib.request.urlopen(stats_url))
print(f"outcome {summary['outcome']}  records {summary['records']}  batches {summary['batches_sent']}  events kept {stats['events_kept']}  duplicates {stats['duplicates']}")
print(f"wall {float(secs):.1f} s  delivery {delivery:.2f} s ({stats['events_kept'] / max(delivery, 1e-9):.0f} events/s)  peak RSS {rss} MiB")
PY
