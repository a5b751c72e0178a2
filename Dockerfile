# enac-cd service image: build with the Rust toolchain, run on a slim Debian
# as a non-root user. The Docker socket is reached through its group, which
# compose adds at run time (`group_add: ${DOCKER_GID}`): its id differs by host.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/enac-cd enac-cd
COPY --from=build /src/target/release/enac-cd /usr/local/bin/enac-cd
USER enac-cd
WORKDIR /var/lib/enac-cd
# Inside the container the service must listen on every interface; publish
# the port on the host's loopback or behind a reverse proxy.
ENV CD_LISTEN=0.0.0.0:8000 \
    CD_DATA_DIR=/var/lib/enac-cd/data \
    CD_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["enac-cd"]
CMD ["serve"]
