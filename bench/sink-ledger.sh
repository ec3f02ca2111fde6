#!/usr/bin/env bash
# Issue 14 benchmark: DAYS days x ROWS ledger rows (default 20 x 5,000 = 100,000), written straight into a
# state database, handed to a sink that joins the ledger (a sink new to it gets the whole ledger first).
# SINK=file (SINK_FILE_FORMAT=FORMAT, default csv; SINK_FILE_SCHEMA=SCHEMA, default native) or SINK=postgres
# (a throwaway cluster on 127.0.0.1).
# The source is a one-app simulated Dify, so the run's time is the hand-over: prints wall time and peak
# RSS of the run, the delivery phase (`records queued` to `run finished`), rows/s, and the slowest batch
# (for the file sink: one day's rewrite).
# Needs: apt-get install time postgresql; python3.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
DAYS=${DAYS:-20}
ROWS=${ROWS:-5000}
SINK=${SINK:-file}
first=$(date -u -d "$((DAYS + 2)) days ago" +%F)
start_dify --apps-per-mode 1 --days 1 --runs-per-app-per-day 1 --seed 14
STATE_DIR="$WORK/state" "$BIN/exporter" watermark set "$(date -u -d '2 days ago' +%F)" --yes >/dev/null 2>&1
python3 bench/ledger-fill.py "$WORK/state/state.db" "$DAYS" "$ROWS" 1000 "$first"
case "$SINK" in
  file) sink=(SINK_FILE_DIR="$WORK/files" SINK_FILE_FORMAT="${FORMAT:-csv}" SINK_FILE_SCHEMA="${SCHEMA:-native}") ;;
  postgres)
    start_postgres
    sink=(SINK_POSTGRES_URL="$POSTGRES_URL") ;;
  *) echo "SINK must be file or postgres" >&2; exit 2 ;;
esac
read -r rss secs < <(measure "$WORK/run.log" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" \
    DIFY_PASSWORD="$DIFY_PASSWORD" STATE_DIR="$WORK/state" DIFY_FETCH_DAYS=1 LOG_FORMAT=json "${sink[@]}" \
    "$BIN/exporter" run)
python3 - "$WORK/run.log" "$rss" "$secs" <<'PY'
import json, sys
from datetime import datetime
log, rss, secs = sys.argv[1:]
lines = [json.loads(l) for l in open(log)]
when = lambda l: datetime.fromisoformat(l["timestamp"].replace("Z", "+00:00"))
at = lambda m: when(next(l for l in lines if l["message"] == m))
summary = next(l for l in lines if l["message"] == "run finished")["context"]
delivery = (at("run finished") - at("records queued")).total_seconds()
sent = summary["records_sent"]
print(f"outcome {summary['outcome']}  records sent {sent}  batches {summary['batches_sent']}")
print(f"wall {float(secs):.2f} s  peak RSS {rss} MiB  delivery {delivery:.2f} s ({sent / max(delivery, 1e-9):.0f} rows/s)")
marks = [when(l) for l in lines if l["message"] in ("records queued", "batch delivered")]
slowest = max((b - a).total_seconds() for a, b in zip(marks, marks[1:]))
print(f"slowest batch {slowest:.3f} s")
PY
