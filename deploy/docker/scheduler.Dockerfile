# syntax=docker/dockerfile:1
# halftime-scheduler + the halftime CLI, on Debian 12 slim.
# Build from the repository root:
#   docker build -f deploy/docker/scheduler.Dockerfile -t halftime-scheduler:0.1.0 .
# Run (state in a volume; the CLI is in the same image):
#   docker run -d -p 50051:50051 -p 9464:9464 -v halftime-data:/var/lib/halftime halftime-scheduler:0.1.0
ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

# ---------------------------------------------------------------- build
FROM ${DEBIAN_IMAGE} AS build
ARG BUILD_JOBS=0
# The packages of scripts/setup.sh that the scheduler and the CLI need (no
# libtorch: HALFTIME_WITH_TORCH=OFF). GTest and benchmark are required by the
# top-level CMakeLists even though no test is built here.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      prometheus-cpp-dev libabsl-dev libgtest-dev libgmock-dev googletest \
      libbenchmark-dev libsqlite3-dev libyaml-cpp-dev libcli11-dev \
      nlohmann-json3-dev libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DHALFTIME_WITH_TORCH=OFF -DHALFTIME_WITH_SERVER=ON \
 && jobs=${BUILD_JOBS}; [ "$jobs" -gt 0 ] || jobs=$(nproc) \
 && ninja -C build -j"$jobs" halftime-scheduler halftime \
 && install -D -s -m 0755 build/server/halftime-scheduler /out/usr/local/bin/halftime-scheduler \
 && install -D -s -m 0755 build/client/halftime /out/usr/local/bin/halftime \
 && install -D -m 0755 deploy/docker/healthcheck-scheduler.sh /out/usr/local/bin/halftime-healthcheck

# ---------------------------------------------------------------- runtime
FROM ${DEBIAN_SLIM_IMAGE} AS runtime
# Runtime libraries only (the shared objects the binaries link, see ldd).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libre2-9 libc-ares2 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 \
      libsqlite3-0 libyaml-cpp0.7 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 halftime \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/halftime \
      --no-create-home --shell /usr/sbin/nologin halftime \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/halftime
COPY --from=build /out/ /
# Fail the build, not the first start, when a shared library is missing.
RUN ! ldd /usr/local/bin/halftime-scheduler /usr/local/bin/halftime | grep "not found" \
 && halftime-scheduler --help >/dev/null

USER 10001:10001
WORKDIR /var/lib/halftime
VOLUME ["/var/lib/halftime"]
# 50051: gRPC API + grpc.health.v1.Health + reflection; 9464: /metrics.
EXPOSE 50051 9464
ENV HALFTIME_SERVER=127.0.0.1:50051
# Docker only (Kubernetes uses the native gRPC probes of the manifests):
# healthy when the scheduler answers `halftime workers` on its own port. With
# --token-file set HALFTIME_TOKEN_FILE to a user-token file; with TLS set
# HALFTIME_TLS_CA (and HALFTIME_TLS_CERT/HALFTIME_TLS_KEY for mutual TLS).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/halftime-healthcheck"]
# SIGTERM: graceful shutdown (health NOT_SERVING, calls finish, DB closed).
STOPSIGNAL SIGTERM
ENTRYPOINT ["halftime-scheduler"]
CMD ["--listen=0.0.0.0:50051", "--metrics=0.0.0.0:9464", "--data-dir=/var/lib/halftime"]
