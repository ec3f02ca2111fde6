#!/usr/bin/env bash
# The container image, built from the Dockerfile and run the way the README and the CronJob run it:
# a read-only root filesystem, UID 65532, STATE_DIR on a volume. Against the simulators, a good run must
# exit 0 and deliver every record, and `docker stop` during a run must end it with 143 (stopped by SIGTERM).
#
# The engine is Debian's docker.io, started here on a private socket with no bridge and no iptables rules,
# and every container shares the host's loopback, where the simulators listen. There is no registry, so the
# two base images the Dockerfile names are made here from Debian packages under those same tags, only for
# this check:
#   - the build image: a minimal Debian 12 with gcc and libc6-dev (as the rust:*-slim images have) and the
#     machine's own Rust toolchain, whose version must be the one the tag names; cargo fetches the crates
#     from crates.io, trusting this machine's CA bundle (which holds any CA its owner added, such as an
#     egress proxy's);
#   - the runtime image: the packages distroless/cc-debian12 is made of, extracted without a shell or a
#     package manager, with its `nonroot` user (65532) and the CA bundle.
#
# A machine that cannot run a Docker engine (no cgroups or overlay mounts, say) fails this check and says why;
# its owner can skip it explicitly with EXPORTER_CI_SKIP_CONTAINER=1 (README, "Tests").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${EXPORTER_CI_SKIP_CONTAINER:-}" = 1 ]; then
    echo "container check skipped: EXPORTER_CI_SKIP_CONTAINER=1 is set"
    exit 0
fi

if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker ] || ! command -v mmdebstrap >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io mmdebstrap
    # The package starts its daemon where an init system runs; this check starts its own.
    systemctl disable --now docker.socket docker >/dev/null 2>&1 || true
fi

work=$(mktemp -d /tmp/exporter-container.XXXXXX)
socket="$work/docker.sock"
# Debian's client, whose API version is its daemon's (another client earlier on PATH may be newer).
docker() { /usr/bin/docker -H "unix://$socket" "$@"; }

cleanup() {
    local status=$?
    if docker version >/dev/null 2>&1; then
        docker ps -aq | xargs -r /usr/bin/docker -H "unix://$socket" rm -f >/dev/null 2>&1 || true
    fi
    kill $(jobs -p) 2>/dev/null || true
    wait 2>/dev/null || true
    # dockerd leaves its network namespace mounted under the exec root.
    awk -v dir="$work/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

fail() {
    echo "container check failed: $*" >&2
    exit 1
}

echo "-- starting the Docker engine on $socket"
/usr/sbin/dockerd --host "unix://$socket" --data-root "$work/data" --exec-root "$work/exec" \
    --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip6tables=false >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 120); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
done
if ! docker version >/dev/null 2>&1; then
    tail -n 20 "$work/dockerd.log" >&2
    fail "the Docker engine (dockerd from Debian's docker.io) did not start; its last log lines are above.
A machine that cannot run containers can skip this check with EXPORTER_CI_SKIP_CONTAINER=1."
fi

builder_tag=$(awk '$1 == "FROM" && $3 == "AS" && $4 == "builder" { print $2 }' Dockerfile)
runtime_tag=$(awk '$1 == "FROM" { tag = $2 } END { print tag }' Dockerfile)
[ -n "$builder_tag" ] && [ -n "$runtime_tag" ] || fail "Dockerfile: no 'FROM … AS builder' and final FROM line found"

toolchain=$(rustc --print sysroot)
rust_version=$(rustc --version | awk '{ print $2 }')
wanted=${builder_tag#*:}
wanted=${wanted%%-*}
case "$rust_version" in
    "$wanted" | "$wanted".*) ;;
    *) fail "the Dockerfile builds with Rust $wanted ($builder_tag) but this machine's toolchain is $rust_version" ;;
esac

sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list

echo "-- $builder_tag: Debian 12 minbase, gcc, libc6-dev, ca-certificates and Rust $rust_version"
mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    --customize-hook="mkdir -p \"\$1/usr/local/rust\" && cp -a '$toolchain/bin' '$toolchain/lib' \"\$1/usr/local/rust/\"" \
    --customize-hook='rm -rf "$1/usr/local/rust/lib/rustlib/src"' \
    --customize-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"' \
    bookworm - "$sources" |
    docker import \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "$builder_tag" >/dev/null

echo "-- $runtime_tag: glibc, libgcc, libssl, libstdc++, tzdata, netbase, CA bundle, user nonroot (65532)"
# Extract hooks: the extract variant installs nothing, so mmdebstrap runs no customize hook for it.
mmdebstrap --quiet --variant=extract \
    --include=base-files,netbase,tzdata,libc6,libgcc-s1,libgomp1,libssl3,libstdc++6 \
    --extract-hook='printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" >"$1/etc/passwd"' \
    --extract-hook='printf "root:x:0:\nnonroot:x:65532:\n" >"$1/etc/group"' \
    --extract-hook='mkdir -p "$1/etc/ssl/certs" "$1/home/nonroot" "$1/tmp" && chmod 1777 "$1/tmp" && chown 65532:65532 "$1/home/nonroot"' \
    --extract-hook='cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"' \
    bookworm - "$sources" |
    docker import \
        --change 'USER 65532:65532' \
        --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        - "$runtime_tag" >/dev/null

echo "-- docker build (a release build of the exporter inside $builder_tag; crates from crates.io)"
started=$SECONDS
docker build --quiet --network host -t dify-usage-exporter:ci . >/dev/null
size=$(docker image inspect --format '{{.Size}}' dify-usage-exporter:ci)
echo "built in $((SECONDS - started)) s; image $((size / 1000000)) MB"

cargo build --quiet --locked -p dify-sim --bins
sims="$PWD/target/debug"

source sim/wait-for-sim.sh

# start_sim NAME ARGS...: starts a simulator and exports the variables it prints once it listens.
start_sim() {
    local name=$1 log
    shift
    log=$(mktemp "$work/$name.XXXXXX.log")
    "$sims/$name" "$@" >"$log" 2>&1 &
    wait_for_sim "$log" $!
}

# exporter NAME ARGS...: `docker run` of the image as the CronJob runs it, detached, STATE_DIR on a fresh named
# volume NAME (Docker gives it the image's 65532 ownership); prints the container.
exporter() {
    local name=$1
    shift
    docker run --detach --name "$name" --network host --read-only --user 65532 \
        --volume "$name:/var/lib/dify-usage-exporter" \
        --env DIFY_API_URL --env DIFY_EMAIL --env DIFY_PASSWORD --env EXTERNAL_API_URL \
        --env EXTERNAL_API_TOKEN=ci-token --env DIFY_FETCH_DAYS=7 \
        "$@" dify-usage-exporter:ci run
}

echo "-- a run of the image against the simulators: exit 0, every record delivered"
start_sim dify-sim --apps-per-mode 2 --days 7 --first-day "$(date -u -d '7 days ago' +%F)"
start_sim meter-sim --token ci-token
meter_base=${EXTERNAL_API_URL%/v1/usage}
exporter good >/dev/null
status=$(docker wait good)
docker logs good >"$work/good.log" 2>&1
[ "$status" = 0 ] || { cat "$work/good.log" >&2; fail "the run exited $status, not 0"; }
python3 - "$work/good.log" "$meter_base" <<'PY' || fail "the run's records did not all reach the sink"
import json, sys, urllib.request
log, meter = sys.argv[1:]
finished = [json.loads(line) for line in open(log) if '"run finished"' in line][0]["context"]
held = json.load(urllib.request.urlopen(meter + "/_meter/stats"))["records_inserted"]
print(f"outcome {finished['outcome']}, {finished['records']} records, {finished['records_sent']} sent, sink holds {held}")
sys.exit(0 if finished["outcome"] == "completed" and finished["records_sent"] == held > 0 else 1)
PY

echo "-- docker stop during a run: exit 143"
start_sim dify-sim --apps-per-mode 2 --days 7 --first-day "$(date -u -d '7 days ago' +%F)" --delay-ms 500
exporter stopped >/dev/null
# The job is under way once Dify has been asked (the signal handlers are installed before the first request).
dify_requests() {
    python3 -c 'import json, sys, urllib.request; print(json.load(urllib.request.urlopen(sys.argv[1] + "/_sim/stats"))["requests_total"])' "$DIFY_API_URL"
}
for _ in $(seq 300); do
    [ "$(dify_requests)" -gt 0 ] && break
    sleep 0.1
done
[ "$(dify_requests)" -gt 0 ] || { docker logs stopped >&2; fail "the container asked Dify nothing within 30 s"; }
docker stop --time 30 stopped >/dev/null
status=$(docker wait stopped)
docker logs stopped >"$work/stopped.log" 2>&1
[ "$status" = 143 ] || { cat "$work/stopped.log" >&2; fail "after docker stop the run exited $status, not 143"; }
grep -q '"outcome":"stopped"' "$work/stopped.log" || { cat "$work/stopped.log" >&2; fail "no 'stopped' outcome in the log"; }
echo "stopped with 143 and outcome stopped"
