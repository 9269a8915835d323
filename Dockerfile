# The aigw image: one binary for every role.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# No .git in the build context: `docker build --build-arg AIGW_BUILD_COMMIT=$(git rev-parse HEAD)`
# names the commit in `aigw --version`.
ARG AIGW_BUILD_COMMIT=
RUN cargo build --release --locked -p aigw

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 aigw
COPY --from=build /src/target/release/aigw /usr/local/bin/aigw
USER aigw
ENV AIGW_LISTEN=0.0.0.0:8080 AIGW_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["aigw"]
CMD ["all"]
