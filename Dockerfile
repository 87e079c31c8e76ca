# syntax=docker/dockerfile:1
# Build: docker build -t compressd .
# Run:   docker run -p 8080:8080 -v compressd-data:/var/lib/compressd -e COMPRESSD_ADMIN_KEY=… compressd
# Roles: COMPRESSD_ROLE=api (no workers) or worker (no API; its address answers only the
# probes and /metrics) to scale them apart; all (the default) does both.
# It binds 0.0.0.0, so it refuses to start without API keys: set COMPRESSD_ADMIN_KEY and make
# keys over /v1/admin, or `docker run … compressd keys create --tenant NAME` on the volume first.
FROM rust:1.95-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# A stripped binary (about a sixth of the size with line tables); panics still name their
# message, which is what a job's error reports.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# Dependencies first, so that code changes do not rebuild them: the workspace's manifests with
# empty sources stand in for the real crates (and a stub for every [[bench]] the manifest names).
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY crates/domain/Cargo.toml crates/domain/Cargo.toml
COPY crates/compress/Cargo.toml crates/compress/Cargo.toml
RUN mkdir -p src benches crates/domain/src crates/compress/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs crates/domain/src/lib.rs crates/compress/src/lib.rs \
 && sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"/\1/p}' Cargo.toml | while read -r b; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin compressd \
 && rm -rf src benches crates/domain/src crates/compress/src
COPY crates crates
COPY src src
COPY migrations migrations
COPY benches benches
RUN touch src/main.rs src/lib.rs crates/domain/src/lib.rs crates/compress/src/lib.rs \
 && cargo build --release --locked --bin compressd

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="compressd" \
      org.opencontainers.image.description="Model compression as a service: pruning, quantization, distillation, GGUF export" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/compressd/compressd"
# The system's CA bundle (from the build image), where TLS clients look for it: webhook
# receivers, object storage and collectors behind a corporate CA are trusted once it is added
# (mount a bundle over this file, or set SSL_CERT_FILE).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN groupadd --system --gid 10001 compressd \
 && useradd --system --uid 10001 --gid compressd --home-dir /var/lib/compressd compressd \
 && mkdir -p /var/lib/compressd && chown compressd:compressd /var/lib/compressd
COPY --from=build /src/target/release/compressd /usr/local/bin/compressd
USER 10001:10001
WORKDIR /var/lib/compressd
ENV COMPRESSD_BIND=0.0.0.0:8080 \
    COMPRESSD_DATA_DIR=/var/lib/compressd \
    DATABASE_URL=sqlite:///var/lib/compressd/compressd.db \
    COMPRESSD_LOG_FORMAT=json
EXPOSE 8080
VOLUME ["/var/lib/compressd"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["compressd", "healthcheck"]
# SIGTERM lets running jobs finish within COMPRESSD_SHUTDOWN_GRACE_SECONDS, then releases the rest.
STOPSIGNAL SIGTERM
ENTRYPOINT ["compressd"]
CMD ["serve"]
