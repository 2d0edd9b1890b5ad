# syntax=docker/dockerfile:1
# halftime-worker + halftime-train on CPU: Debian 12's libtorch (1.13) with
# OpenBLAS's OpenMP build, so fp32 baselines are fair: the reference BLAS is
# ~30x slower, and the pthread OpenBLAS's threads compete with libtorch's
# OpenMP threads (fp32 1.3-3x slower); either would inflate every saving.
# Build from the repository root:
#   docker build -f deploy/docker/worker-cpu.Dockerfile -t halftime-worker-cpu:0.1.0 .
# Run against a scheduler:
#   docker run -d halftime-worker-cpu:0.1.0 --scheduler=SCHEDULER:50051 \
#     --metrics=0.0.0.0:9465 --work-dir=/var/lib/halftime-worker --data-root=/data
ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

# ---------------------------------------------------------------- build
FROM ${DEBIAN_IMAGE} AS build
ARG BUILD_JOBS=0
# scripts/setup.sh's build packages, minus the test-only Python peers.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libtorch-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev \
      protobuf-compiler prometheus-cpp-dev libabsl-dev libgtest-dev libgmock-dev \
      googletest libbenchmark-dev libsqlite3-dev libyaml-cpp-dev libcli11-dev \
      nlohmann-json3-dev libssl-dev zlib1g-dev \
      libopenblas0-openmp libopenblas-openmp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DHALFTIME_WITH_TORCH=ON -DHALFTIME_WITH_SERVER=OFF \
 && jobs=${BUILD_JOBS}; [ "$jobs" -gt 0 ] || jobs=$(nproc) \
 && ninja -C build -j"$jobs" halftime-worker halftime-train \
 && install -D -s -m 0755 build/worker/halftime-worker /out/usr/local/bin/halftime-worker \
 && install -D -s -m 0755 build/train/halftime-train /out/usr/local/bin/halftime-train \
 && install -D -m 0755 deploy/docker/healthcheck-worker.sh /out/usr/local/bin/halftime-healthcheck \
 && mkdir -p /out/opt/halftime && cp -r examples /out/opt/halftime/examples

# ---------------------------------------------------------------- runtime
FROM ${DEBIAN_SLIM_IMAGE} AS runtime
# Runtime libraries only. libtorch1.13 pulls its own dependencies; the OpenMP
# OpenBLAS is installed explicitly and must be what libblas.so.3 resolves to
# (the worker marks its savings `baseline: degraded` otherwise).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates \
      libtorch1.13 libopenblas0-openmp \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libre2-9 libc-ares2 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 \
      libsqlite3-0 libyaml-cpp0.7 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3) \
 && case "$blas" in *openblas-openmp*) ;; *) echo "libblas.so.3 is $blas, not the OpenMP OpenBLAS" >&2; exit 1 ;; esac \
 && groupadd --system --gid 10001 halftime \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/halftime-worker \
      --no-create-home --shell /usr/sbin/nologin halftime \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/halftime-worker /data
COPY --from=build /out/ /
RUN ! ldd /usr/local/bin/halftime-worker /usr/local/bin/halftime-train | grep "not found" \
 && halftime-worker --help >/dev/null

USER 10001:10001
WORKDIR /var/lib/halftime-worker
# 9465: /metrics (the worker serves no gRPC; it dials the scheduler).
EXPOSE 9465
ENV OMP_NUM_THREADS=4 \
    HALFTIME_METRICS_PORT=9465
HEALTHCHECK --interval=20s --timeout=10s --start-period=300s --retries=3 \
  CMD ["/usr/local/bin/halftime-healthcheck"]
# SIGTERM drains: running jobs checkpoint, upload and are handed back. Give
# `docker stop -t` more than --stop-grace plus upload time.
STOPSIGNAL SIGTERM
ENTRYPOINT ["halftime-worker"]
CMD ["--scheduler=halftime-scheduler:50051", "--metrics=0.0.0.0:9465", "--data-root=/data", "--work-dir=/var/lib/halftime-worker", "--trainer=/usr/local/bin/halftime-train", "--stop-grace=240"]
