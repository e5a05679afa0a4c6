# syntax=docker/dockerfile:1
# Canopy's container image: one binary, every role (`canopy <role>`).
#
#   docker build -t canopy .
#   docker run -p 17913:17913 canopy            # standalone, data in the container
#
# Dependencies are built in a layer of their own (cargo-chef: a recipe of
# the manifests), so a change to Canopy's source rebuilds Canopy only.

FROM lukemathwalker/cargo-chef:latest-rust-1.95-bookworm AS chef
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# protoc and protobuf's include files: the etcd client compiles etcd's protobufs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json -p canopy
COPY . .
RUN cargo build --release -p canopy --bin canopy \
 && strip target/release/canopy

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/canopy --create-home canopy
COPY --from=builder /src/target/release/canopy /usr/local/bin/canopy
USER canopy
WORKDIR /var/lib/canopy
# gRPC, HTTP (API, agent protocols, /metrics, /api/healthz).
EXPOSE 17912 17913
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:17913/api/healthz || exit 1
ENTRYPOINT ["canopy"]
CMD ["standalone", "--data-dir", "/var/lib/canopy/data"]
