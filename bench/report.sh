#!/usr/bin/env bash
# Issue 16 benchmark: `exporter report` over a ledger of DAYS days x ROWS rows a day (USERS users, apps and
# models spread over them), written straight into a state database of this exporter's schema. Prints the wall
# time and peak RSS of `report --by user` over the default window (the last 30 days) and over every day, in
# table and html form.
# Needs: apt-get install time; python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DAYS=${DAYS:-400}
ROWS=${ROWS:-5000}
USERS=${USERS:-1000}
cargo build --release --locked --bin exporter >/dev/null 2>&1
BIN="$PWD/target/release"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATE_DIR="$WORK/state" "$BIN/exporter" watermark set 2026-01-01 --yes >/dev/null 2>&1
python3 bench/ledger-fill.py "$WORK/state/state.db" "$DAYS" "$ROWS" "$USERS"
last=$(python3 -c "import datetime; print(datetime.date(2025,1,1)+datetime.timedelta(days=$DAYS-1))")
for args in "--by user" "--by user --from 2025-01-01 --to $last" "--by user --output html" \
            "--by user --from 2025-01-01 --to $last --output html"; do
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e %M" -o "$WORK/time" env STATE_DIR="$WORK/state" "$BIN/exporter" report $args >"$WORK/out"
  read -r secs kib <"$WORK/time"
  printf 'report %-55s %6.2f s  %6.1f MiB  %8d bytes\n' "$args" "$secs" "$(echo "$kib / 1024" | bc -l)" \
    "$(wc -c <"$WORK/out")"
done
