# Build stage: the whole toolchain, cmake for Pingora's zlib-ng.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY vendor ./vendor
RUN cargo build --release --locked --bin mcp-fleet

# Runtime stage: the binary and the default config only.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates tini && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/mcp-fleet --create-home mcp-fleet
COPY --from=build /src/target/release/mcp-fleet /usr/local/bin/mcp-fleet
COPY conf/fleet.toml /etc/mcp-fleet/fleet.toml
# The config's relative state and log dirs resolve next to it; point them at writable places.
RUN sed -i 's|^state_dir = .*|state_dir = "/var/lib/mcp-fleet/state"|; s|^log_dir = .*|log_dir = "/var/lib/mcp-fleet/logs"|' /etc/mcp-fleet/fleet.toml
USER mcp-fleet
WORKDIR /var/lib/mcp-fleet
EXPOSE 8080 9090 3000
# tini reaps and forwards signals; serve drains on SIGTERM and stops every child.
ENTRYPOINT ["/usr/bin/tini", "--", "mcp-fleet"]
CMD ["serve", "--config", "/etc/mcp-fleet/fleet.toml"]
