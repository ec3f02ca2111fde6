#
# dify-usage-exporter: run-once CLI, started by a Kubernetes CronJob (deploy/kubernetes/cronjob.yaml).
#
#   docker build -t dify-usage-exporter:dev .
#   docker run --rm --env-file .env -v exporter-state:/var/lib/dify-usage-exporter dify-usage-exporter:dev
#
# Plain Dockerfile syntax on purpose (no RUN --mount cache), so it builds with BuildKit, the legacy
# builder, buildah/podman and kaniko alike. The price: a source change recompiles the dependencies.

############################
# Build stage
############################
# Bookworm (Debian 12) on purpose: the binary links against glibc, so the build image must not be newer
# than the runtime image (distroless cc-debian12).
FROM rust:1.95-slim-bookworm AS builder

# No extra packages: TLS is rustls with the aws-lc-rs provider, whose aws-lc-sys (0.47) compiles AWS-LC with
# the `cc` crate on Linux x86_64/aarch64 (pre-generated bindings; no cmake, no bindgen/clang, no Go/Perl).
# It needs a C compiler and libc headers, and the rust:*-slim images already ship gcc and libc6-dev
# (rustc needs them as its linker).

WORKDIR /src

# The workspace is `.` + `sim`; cargo refuses to load Cargo.toml unless every member is present, so the
# sim crate is copied even though only the `exporter` binary is built.
COPY Cargo.toml Cargo.lock ./
COPY sim ./sim
COPY src ./src

# --locked: build exactly the dependency set in Cargo.lock (fails instead of silently updating it).
RUN cargo build --release --locked --bin exporter \
    && install -D -m 0755 target/release/exporter /out/exporter \
    && install -d -m 0700 /out/state/dify-usage-exporter

############################
# Runtime stage
############################
# distroless/cc: glibc, libgcc, CA certificates, tzdata, no shell, no package manager.
# The :nonroot tag runs as UID/GID 65532 by default; it is repeated numerically below so that
# Kubernetes' runAsNonRoot check can verify it without resolving a user name.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /out/exporter /usr/local/bin/exporter
# Pre-create STATE_DIR owned by the runtime user (the image has no shell to mkdir it). Docker copies this
# ownership into a fresh named volume; without it the volume would be root-owned and unwritable for 65532.
# (In Kubernetes the PVC is mounted over it and fsGroup makes it writable instead.)
COPY --from=builder --chown=65532:65532 /out/state/ /var/lib/

USER 65532:65532

# Lock file and state database (SQLite). Mount a persistent volume here (the CronJob uses a PVC);
# with a read-only root filesystem this volume is the only writable path the program needs.
ENV STATE_DIR=/var/lib/dify-usage-exporter
VOLUME ["/var/lib/dify-usage-exporter"]

# No HEALTHCHECK: this is a run-once job, not a service. It has no endpoint to probe; it is watched
# through its exit code (0 done, 1 failed, 130/143 stopped by SIGINT/SIGTERM) and its JSON log lines.

# Exec form, so the binary is PID 1 and receives SIGTERM directly from `docker stop` / the kubelet
# (it stops gracefully within GRACEFUL_SHUTDOWN_TIMEOUT, saving its progress).
ENTRYPOINT ["/usr/local/bin/exporter"]
CMD ["run"]
