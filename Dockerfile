# syntax=docker/dockerfile:1
# Herald's container image: built in a Rust image, run from a distroless one.
#
#   docker build -t herald .
#   docker run --rm -p 8080:8080 -e REVERB_SERVER_HOST=0.0.0.0 \
#     -e REVERB_APP_ID=my-app -e REVERB_APP_KEY=my-key -e REVERB_APP_SECRET=my-secret herald
#
# The runtime image has the binary, glibc, CA certificates (for webhooks over HTTPS) and nothing
# else: no shell, no package manager. It runs as user 65532 ("nonroot"), so it can bind 8080 but not
# ports below 1024; map 80/443 on the host or the load balancer instead.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The integration tests, benches and fuzz targets are not needed for the binary; the cache mounts
# keep the registry and the compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin herald \
 && install -D -m 0755 target/release/herald /out/herald

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
USER 65532:65532
EXPOSE 8080
# SIGTERM sends every client 4200 (reconnect elsewhere) and drains for up to 5 s: give `docker stop`
# at least that (its default 10 s is enough).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["start", "--log-format", "json"]
