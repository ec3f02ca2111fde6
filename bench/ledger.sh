#!/usr/bin/env bash
# Issue 14 benchmark: what merging into the ledger adds to a run whose records did not change. The Dify
# simulator (no added delay) serves DAYS days of APPS apps per mode; each exporter first exports the window
# into its own meter simulator, then collects the same window again three times (`run --from --to`: nothing
# changed, so nothing is queued or sent). Prints the median wall time and peak RSS of those runs for this
# build and for BASELINE=DIR (a release build of the commit before the ledger, with its own meter-sim).
# Needs: apt-get install time curl.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
: "${BASELINE:?set BASELINE to the target/release directory of the build to compare with}"
DAYS=${DAYS:-30}
APPS=${APPS:-10}
RUNS=${RUNS:-40}
first=$(date -u -d "$((DAYS + 1)) days ago" +%F)
last=$(date -u -d '2 days ago' +%F)
start_dify --apps-per-mode "$APPS" --days "$DAYS" --first-day "$first" --runs-per-app-per-day "$RUNS" --seed 14
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for build in "$BASELINE" "$BIN"; do
  "$build/meter-sim" --token bench-token >"$WORK/meter.log" 2>&1 &
  meter_pid=$!
  wait_for_sim "$WORK/meter.log" "$meter_pid"
  state="$WORK/state-$(basename "$(dirname "$(dirname "$build")")")"
  run=(env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD"
    EXTERNAL_API_URL="$EXTERNAL_API_URL" EXTERNAL_API_TOKEN=bench-token STATE_DIR="$state"
    DIFY_CONCURRENCY=8 LOG_LEVEL=warn "$build/exporter" run --from "$first" --to "$last")
  "${run[@]}" >"$WORK/first.log" || { echo "the first run of $build failed: $(tail -3 "$WORK/first.log")" >&2; exit 1; }
  walls=() rss=()
  for _ in 1 2 3; do
    read -r mib secs < <(measure "$WORK/again.log" "${run[@]}")
    walls+=("$secs") rss+=("$mib")
  done
  records=$(curl -s "${EXTERNAL_API_URL%/v1/usage}/_meter/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["records_inserted"], "inserted,", s["posts_received"], "POSTs")')
  printf '%s: %s; unchanged re-run median %s s (runs: %s), peak RSS %s MiB\n' "$build" "$records" \
    "$(printf '%s\n' "${walls[@]}" | median)" "${walls[*]}" "$(printf '%s\n' "${rss[@]}" | sort -n | tail -1)"
  kill "$meter_pid"
  wait "$meter_pid" 2>/dev/null || true
done
