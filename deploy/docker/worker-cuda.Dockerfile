# syntax=docker/dockerfile:1
# halftime-worker + halftime-train against a CUDA libtorch, on Debian 12 slim.
# See deploy/docker/README.md ("CUDA worker") for the build arguments. Default:
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t halftime-worker-cuda:0.1.0 .
# which installs the PyTorch wheel TORCH_VERSION from TORCH_INDEX_URL and
# builds against torch.utils.cmake_prefix_path. With a libtorch zip placed in
# deploy/docker/libtorch/ instead:
#   docker build -f deploy/docker/worker-cuda.Dockerfile --build-arg TORCH_SOURCE=zip .
#
# Build arguments:
#   CUDA_BASE_IMAGE  a CUDA *devel* image; only its toolkit (/usr/local/cuda:
#                    nvcc, headers, CMake's CUDAToolkit) is used, by the build
#                    stage. Its CUDA major.minor should match the wheel's.
#   TORCH_SOURCE     wheel (default) or zip.
#   TORCH_VERSION    PyTorch wheel version (>= 2.7: older wheels use the
#                    pre-C++11 ABI and cannot link with Debian's gRPC).
#   TORCH_INDEX_URL  wheel index, e.g. https://download.pytorch.org/whl/cu126.
#   LIBTORCH_ZIP     file name in deploy/docker/libtorch/ (TORCH_SOURCE=zip),
#                    a libtorch "cxx11-abi-shared-with-deps" CUDA build.
ARG CUDA_BASE_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu22.04
ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

FROM ${CUDA_BASE_IMAGE} AS cuda

# ---------------------------------------------------------------- build
FROM ${DEBIAN_IMAGE} AS build
ARG BUILD_JOBS=0
ARG TORCH_SOURCE=wheel
ARG TORCH_VERSION=2.7.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG LIBTORCH_ZIP=
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config unzip \
      python3 python3-venv \
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev \
      protobuf-compiler prometheus-cpp-dev libabsl-dev libgtest-dev libgmock-dev \
      googletest libbenchmark-dev libsqlite3-dev libyaml-cpp-dev libcli11-dev \
      nlohmann-json3-dev libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
# The CUDA toolkit, for find_package(Torch) (Caffe2's CUDA checks) only.
COPY --from=cuda /usr/local/cuda /usr/local/cuda
ENV PATH=/usr/local/cuda/bin:${PATH} \
    CUDA_HOME=/usr/local/cuda
# libtorch ends up under /opt/pytorch either way, at the same path in the
# runtime stage so the binaries' RUNPATH and libtorch's $ORIGIN paths hold:
#   wheel: /opt/pytorch/torch (+ /opt/pytorch/nvidia/*: cuBLAS, cuDNN, ...)
#   zip:   /opt/pytorch/torch (the zip's libtorch/, CUDA libraries included)
# Only the shared libraries go to the runtime stage (/out): Python, the
# wheel's Python modules, headers and static archives stay here.
COPY deploy/docker/libtorch/ /tmp/libtorch/
RUN set -eu; \
    if [ "$TORCH_SOURCE" = wheel ]; then \
      python3 -m venv /opt/venv; \
      /opt/venv/bin/pip install --no-cache-dir --target /opt/pytorch \
        --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"; \
      PYTHONPATH=/opt/pytorch /opt/venv/bin/python3 -c \
        'import torch.utils; print(torch.utils.cmake_prefix_path)' > /tmp/torch_prefix; \
    elif [ "$TORCH_SOURCE" = zip ]; then \
      zip="/tmp/libtorch/${LIBTORCH_ZIP:?set LIBTORCH_ZIP to a file in deploy/docker/libtorch/}"; \
      unzip -q "$zip" -d /tmp/unzipped; \
      mkdir -p /opt/pytorch && mv /tmp/unzipped/libtorch /opt/pytorch/torch; \
      echo /opt/pytorch/torch/share/cmake > /tmp/torch_prefix; \
    else \
      echo "TORCH_SOURCE must be wheel or zip" >&2; exit 1; \
    fi; \
    rm -rf /tmp/libtorch /tmp/unzipped; \
    mkdir -p /out/opt/pytorch/torch; \
    cp -a /opt/pytorch/torch/lib /out/opt/pytorch/torch/lib; \
    if [ -d /opt/pytorch/nvidia ]; then \
      mkdir -p /out/opt/pytorch/nvidia; \
      for d in /opt/pytorch/nvidia/*/; do \
        [ -d "$d/lib" ] && mkdir -p "/out/opt/pytorch/nvidia/$(basename "$d")" && \
          cp -a "$d/lib" "/out/opt/pytorch/nvidia/$(basename "$d")/lib"; \
      done; \
    fi; \
    find /out/opt/pytorch -name '*.a' -delete
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DHALFTIME_WITH_TORCH=ON -DHALFTIME_WITH_SERVER=OFF \
      -DCMAKE_PREFIX_PATH="$(cat /tmp/torch_prefix)" \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
 && jobs=${BUILD_JOBS}; [ "$jobs" -gt 0 ] || jobs=$(nproc) \
 && ninja -C build -j"$jobs" halftime-worker halftime-train \
 && install -D -s -m 0755 build/worker/halftime-worker /out/usr/local/bin/halftime-worker \
 && install -D -s -m 0755 build/train/halftime-train /out/usr/local/bin/halftime-train \
 && install -D -m 0755 deploy/docker/healthcheck-worker.sh /out/usr/local/bin/halftime-healthcheck \
 && mkdir -p /out/opt/halftime && cp -r examples /out/opt/halftime/examples

# ---------------------------------------------------------------- runtime
FROM ${DEBIAN_SLIM_IMAGE} AS runtime
# Runtime libraries only. libtorch brings its CUDA libraries (wheel: the
# nvidia-* packages; zip: bundled); the driver (libcuda.so) is mounted by the
# NVIDIA container toolkit. The OpenMP OpenBLAS serves the CPU-side fp32 work
# (its threads share libtorch's OpenMP pool instead of competing with it).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libgomp1 libopenblas0-openmp \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libre2-9 libc-ares2 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libcivetweb1 \
      libsqlite3-0 libyaml-cpp0.7 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 halftime \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/halftime-worker \
      --no-create-home --shell /usr/sbin/nologin halftime \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/halftime-worker /data
COPY --from=build /out/ /
ENV LD_LIBRARY_PATH=/opt/pytorch/torch/lib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    OMP_NUM_THREADS=8 \
    HALFTIME_METRICS_PORT=9465
# libcuda.so.1 comes from the host at run time; everything else must resolve.
RUN ! ldd /usr/local/bin/halftime-worker /usr/local/bin/halftime-train \
      | grep "not found" | grep -v "libcuda.so"

USER 10001:10001
WORKDIR /var/lib/halftime-worker
EXPOSE 9465
HEALTHCHECK --interval=20s --timeout=10s --start-period=300s --retries=3 \
  CMD ["/usr/local/bin/halftime-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["halftime-worker"]
CMD ["--scheduler=halftime-scheduler:50051", "--metrics=0.0.0.0:9465", "--data-root=/data", "--work-dir=/var/lib/halftime-worker", "--trainer=/usr/local/bin/halftime-train", "--stop-grace=240"]
