# enac-cd service image: build with the Rust toolchain, run on a slim Debian
# as a non-root user (uid 10001). The Docker socket is reached through its
# group, which compose adds at run time (`group_add: ${DOCKER_GID}`), or not at
# all behind the socket proxy (docker-compose.socket-proxy.yml).

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer, built against an empty lib and main:
# this layer is reused until Cargo.toml or Cargo.lock change, so a source change
# recompiles only this crate. (A dummy main rather than cargo-chef: one crate,
# no workspace, nothing for a recipe to generalise, and no extra tool to fetch.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' >src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/enac-cd target/release/.fingerprint/enac-cd-* \
        target/release/deps/enac_cd-* target/release/deps/libenac_cd-*
COPY src src
# The copied sources keep their host mtimes, possibly older than the dummy
# build's outputs: touch them so cargo never takes the dummy for up to date.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && strip target/release/enac-cd

# The CA bundle without the openssl and libssl3 packages ca-certificates
# depends on (9 MB the binary does not use: it speaks TLS through rustls).
FROM debian:bookworm-slim AS certs
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM debian:bookworm-slim
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The data directory exists in the image, owned by the service user and 0700,
# so a named volume mounted on it starts with that owner and mode (the engine
# copies them into an empty volume) and the embedded store can open.
RUN groupadd --system --gid 10001 enac-cd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/enac-cd \
        --no-create-home --shell /usr/sbin/nologin enac-cd \
    && install -d -m 0700 -o 10001 -g 10001 /var/lib/enac-cd /var/lib/enac-cd/data
COPY --from=build /src/target/release/enac-cd /usr/local/bin/enac-cd
USER 10001:10001
WORKDIR /var/lib/enac-cd
# Inside the container the service must listen on every interface; publish
# the port on the host's loopback or behind a reverse proxy.
ENV CD_LISTEN=0.0.0.0:8000 \
    CD_DATA_DIR=/var/lib/enac-cd/data \
    CD_LOG_FORMAT=json
EXPOSE 8000
# `enac-cd healthcheck` asks /readyz on CD_LISTEN's port: healthy means the
# store and the Docker engine answer (no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["enac-cd", "healthcheck"]
ENTRYPOINT ["enac-cd"]
CMD ["serve"]
