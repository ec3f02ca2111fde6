#!/usr/bin/env bash
# Issue 7 benchmark: one chat app read message by message against the Dify simulator with a fixed 20 ms
# delay per answer and DIFY_CONCURRENCY=8: 5,000 conversations of 10 messages (50,000 messages) over 10
# days, then the messages quadrupled twice over: 20,000 conversations of 10 (more conversations) and 5,000
# conversations of 40 (longer conversations). Prints wall time, requests, the ideal (requests x 20 ms / 8),
# the ratio and peak RSS. Needs: apt-get install time curl.
source "$(dirname "${BASH_SOURCE[0]}")/sims.sh"
first=$(date -u -d '11 days ago' +%F)
last=$(date -u -d '2 days ago' +%F)
for shape in "5000 10" "20000 10" "20000 40"; do
  read -r per_day per_conversation <<<"$shape"
  start_dify --delay-ms 20 --modes chat --apps-per-mode 1 --days 10 --first-day "$first" \
    --runs-per-app-per-day "$per_day" --messages-per-conversation "$per_conversation" --seed 7
  read -r rss secs < <(measure "$WORK/records" env -i DIFY_API_URL="$DIFY_BASE" DIFY_EMAIL="$DIFY_EMAIL" DIFY_PASSWORD="$DIFY_PASSWORD" \
      EXTERNAL_API_URL=http://127.0.0.1:9/usage EXTERNAL_API_TOKEN=unused-token DIFY_CONCURRENCY=8 LOG_LEVEL=warn \
      "$BIN/exporter" run --dry-run --from "$first" --to "$last")
  stats=$(curl -s "$DIFY_BASE/_sim/stats")
  read -r requests conversations messages details < <(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); print(s["requests_total"], s["chat_conversations_requests"], s["chat_messages_requests"], s["conversation_detail_requests"])' "$stats")
  ideal=$(python3 -c "print(f'{$requests*0.020/8:.1f}')")
  printf 'messages %6d  per conversation %2d  records %5d  requests %6d (lists %d, messages %d, details %d)  wall %6.1f s  ideal %6.1f s  ratio %.3f  peak RSS %5.1f MiB\n' \
    $((per_day * 10)) "$per_conversation" "$(wc -l <"$WORK/records")" "$requests" "$conversations" "$messages" "$details" "$secs" "$ideal" "$(python3 -c "print($secs/$ideal)")" "$rss"
  kill "$DIFY_PID"
  wait "$DIFY_PID" 2>/dev/null || true
done
