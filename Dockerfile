# The kusanagi binary on a slim Debian. Build: docker build -t kusanagi .
FROM rust:1-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin kusanagi

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kusanagi /usr/local/bin/kusanagi
COPY topologies /etc/kusanagi/topologies
USER 65534:65534
ENTRYPOINT ["kusanagi"]
CMD ["--topology", "/etc/kusanagi/topologies/production.toml", "stage", "ingest"]
