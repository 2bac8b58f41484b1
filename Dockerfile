# syntax=docker/dockerfile:1
# netsight container image: a Rust build stage and a small Debian runtime.
#
#   docker build -t netsight:0.1.0 .
#   docker run -d --name netsight --network host --pid host --read-only \
#     --cap-drop ALL --cap-add NET_ADMIN --cap-add SYS_PTRACE --cap-add DAC_READ_SEARCH \
#     netsight:0.1.0
#
# The daemon runs as root inside the container but is meant to get only the three
# capabilities above (see deploy/README.md for why each): container runtimes cannot
# hand ambient capabilities to a non-root user, so a non-root image would lose them.
# --network host / --pid host make it observe the host rather than the container.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only what the release binary needs (BuildKit then transfers only these paths):
# the manifest and lockfile, the sources, the embedded default configuration and
# rule packs, and the bench sources Cargo.toml declares.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
COPY rules ./rules
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin netsight \
 && install -D -m 0755 target/release/netsight /out/netsight

FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: the system trust store for OTLP export over https.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -m 0750 /var/lib/netsight /etc/netsight
COPY --from=build /out/netsight /usr/local/bin/netsight
COPY config/default.yaml /etc/netsight/netsight.yaml
LABEL org.opencontainers.image.title="netsight" \
      org.opencontainers.image.description="Linux network-observability daemon" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
EXPOSE 9977
VOLUME ["/var/lib/netsight"]
USER root
ENTRYPOINT ["/usr/local/bin/netsight"]
CMD ["serve", "--config", "/etc/netsight/netsight.yaml"]
