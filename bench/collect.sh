#!/usr/bin/env bash
# Issue 3 benchmark: collection against the Dify simulator with a fixed 20 ms delay per request, a
# window of 10,000 workflow runs (10 run-carrying apps x 10 days x 100 runs), then the same with the runs
# quadrupled. Prints wall time, requests, the ideal (requests x 20 ms / DIFY_CONCURRENCY), and peak RSS.
# Needs: apt-get install time curl.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
first=$(date -u -d '11 days ago' +%F)
last=$(date -u -d '2 days ago' +%F)
for runs in 100 400; do
  start_dify --delay-ms 20 --apps-per-mode 5 --days 10 --first-day "$first" --runs-per-app-per-day "$runs" --seed 3
  read -r rss secs < <(measure "$WORK/records" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD" \
      EXTERNAL_API_URL=http://127.0.0.1:9/usage EXTERNAL_API_TOKEN=unused-token DIFY_CONCURRENCY=8 LOG_LEVEL=warn \
      "$BIN/exporter" run --dry-run --from "$first" --to "$last")
  requests=$(curl -s "$DIFY_BASE/_sim/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_total"])')
  ideal=$(python3 -c "print(f'{$requests*0.020/8:.1f}')")
  printf 'runs %6d  records %6d  requests %6d  wall %6.1f s  ideal %6.1f s  ratio %.3f  peak RSS %5.1f MiB\n' \
    $((runs * 100)) "$(wc -l <"$WORK/records")" "$requests" "$secs" "$ideal" "$(python3 -c "print($secs/$ideal)")" "$rss"
  kill "$DIFY_PID"
  wait "$DIFY_PID" 2>/dev/null || true
done
