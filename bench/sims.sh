# Shared by the benchmark scripts: build the release binaries and start the simulators.
# Source it; it defines start_dify, start_meter and cleans up both on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --workspace --bins >/dev/null 2>&1
BIN="$PWD/target/release"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

source sim/wait-for-sim.sh

# start_dify ARGS...: a simulated Dify (1.9.2 login) with the given dify-sim flags.
start_dify() {
  "$BIN/dify-sim" "$@" >"$WORK/dify.log" 2>&1 &
  DIFY_PID=$!
  wait_for_sim "$WORK/dify.log" "$DIFY_PID"
  DIFY_BASE="$DIFY_API_URL"
}

# start_meter: a simulated metering API.
start_meter() {
  "$BIN/meter-sim" --token bench-token >"$WORK/meter.log" 2>&1 &
  wait_for_sim "$WORK/meter.log" $!
  METER_BASE="${EXTERNAL_API_URL%/v1/usage}"
}

# measure OUT CMD...: runs CMD with its stdout in OUT; prints its peak RSS in MiB and wall seconds.
measure() {
  local out=$1
  shift
  /usr/bin/time -f "%M %e" -o "$WORK/time" "$@" >"$out"
  awk '{printf "%.1f %s\n", $1/1024, $2}' "$WORK/time"
}

# start_postgres: a throwaway PostgreSQL cluster on 127.0.0.1 (fsync on); exports POSTGRES_URL, PGBIN and
# as_pg, which runs a command as the postgres user when this shell is root.
start_postgres() {
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  chmod 755 "$WORK"; mkdir "$WORK/pg"; [ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
  echo bench-password >"$WORK/pg/pw"
  as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --pwfile "$WORK/pg/pw" --auth-host=scram-sha-256 --no-sync >/dev/null
  PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
  trap 'as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
  POSTGRES_URL="postgres://postgres:bench-password@127.0.0.1:$PGPORT/postgres?sslmode=disable"
}
