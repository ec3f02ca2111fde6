# Sourced by bench/sims.sh and .ci/container.sh: wait_for_sim LOG PID waits until the simulator with that
# process id wrote its address line to LOG, then exports the variables it printed (DIFY_API_URL, ...).
wait_for_sim() {
  local log=$1 pid=$2
  for _ in $(seq 600); do
    grep -q "listening on" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "listening on" "$log" || { echo "simulator did not start: $(cat "$log")" >&2; exit 1; }
  eval "$(grep -E '^  [A-Z_]+=' "$log" | sed 's/^  /export /')"
}
