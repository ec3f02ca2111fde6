#!/usr/bin/env bash
# Start-up cost of the commands people and CI run most: wall time (hyperfine, median of N runs) and peak
# RSS (GNU time, the largest of N runs) of `validate-config` and `next-runs -n 100` on the release build.
# Needs: apt-get install hyperfine time. Record the output in docs/benchmarks.md with the machine and date.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${RUNS:-30}"
cargo build --release --locked --bin exporter >/dev/null
bin="$PWD/target/release/exporter"

names=("validate-config" "next-runs -n 100")
commands=(
  "$bin --env-file .env.example validate-config"
  "$bin --env-file .env.example next-runs -n 100 --from 2026-11-28T00:00:00Z"
)
for i in "${!commands[@]}"; do
  hyperfine --shell=none --warmup 3 --runs "$runs" --export-json /tmp/exporter-bench.json "${commands[$i]}" >/dev/null
  median_ms=$(python3 -c 'import json; r=json.load(open("/tmp/exporter-bench.json"))["results"][0]; print("%.2f" % (r["median"]*1000))')
  peak_kb=0
  for _ in $(seq "$runs"); do
    kb=$(/usr/bin/time -f %M ${commands[$i]} 2>&1 >/dev/null | tail -1)
    if (( kb > peak_kb )); then peak_kb=$kb; fi
  done
  printf '%-18s median %6s ms   peak RSS %5.2f MiB   (%d runs each)\n' \
    "${names[$i]}" "$median_ms" "$(python3 -c "print($peak_kb/1024)")" "$runs"
done
