#!/usr/bin/env bash
# Installs every Debian package Halftime needs to build, test and run the demo.
# Idempotent: packages already present are skipped; uses sudo when not root.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config clang-format
  # the sanitizer/fuzzing build (scripts/test.sh): Clang with libFuzzer
  # (libclang_rt.fuzzer is only recommended by clang, so named here)
  clang libclang-rt-14-dev
  # libraries (see CMakeLists.txt find_package calls)
  libtorch-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler prometheus-cpp-dev libabsl-dev libgtest-dev libgmock-dev
  googletest libbenchmark-dev libsqlite3-dev libyaml-cpp-dev libcli11-dev
  nlohmann-json3-dev libssl-dev zlib1g-dev
  # the tokenizer (tokenizer/): pre-tokenizer regexes and NFC; and
  # libsentencepiece, which only the tokenizer.model parity test links, as
  # the reference the tokenizer's own SentencePiece reader is held to
  libpcre2-dev libutf8proc-dev libsentencepiece-dev
  # The fastest fp32 this machine runs, measured (bench/blas/compare.py):
  # OpenBLAS's OpenMP build shares libtorch's OpenMP threads. The reference
  # BLAS runs fp32 ~30x slower, and the pthread OpenBLAS's threads spin
  # against libtorch's OpenMP threads (1.3-3x slower); either would inflate
  # every savings figure.
  libopenblas0-openmp libopenblas-openmp-dev
  # ...the slow arrangements too, only so that the tests can start a worker
  # on each (through LD_LIBRARY_PATH) and see it marked `baseline: degraded`
  libopenblas0-pthread libblas3
  # reference peers used by tests (PyTorch parity, generated Python gRPC
  # client, certificates for the TLS end-to-end tests)
  python3 python3-torch python3-grpcio python3-protobuf python3-yaml
  python3-cryptography
  # end-to-end tooling
  prometheus procps
  # renders `halftime savings --html` reports to PNG in the end-to-end test
  chromium-headless-shell
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# libblas.so.3, liblapack.so.3 and libopenblas.so.0 (libtorch links all
# three) must resolve to the OpenMP OpenBLAS. With the pthread build
# installed too, Debian's automatic choice would be the pthread one
# (priority 100 against 95), so the choice is set explicitly.
if command -v update-alternatives >/dev/null; then
  arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    want=/usr/lib/$arch/openblas-openmp/$lib
    have=$(update-alternatives --query "$lib-$arch" 2>/dev/null |
           awk '/^Value:/{print $2}')
    if [ "$have" != "$want" ] && [ -e "$want" ]; then
      echo "setup: pointing $lib at the OpenMP OpenBLAS (was '${have:-nothing}')"
      SUDO=""
      if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
      $SUDO update-alternatives --quiet --set "$lib-$arch" "$want"
    fi
  done
fi

# >>> tokenizer reference (tests/tokenizer; see setup-tokenizer-reference.sh) >>>
"$(dirname "$0")/setup-tokenizer-reference.sh"
# <<< tokenizer reference <<<

# >>> deploy tooling (tests/deploy; owner: issue #8) >>>
# Helm and the manifest schema validators, into the git-ignored .tools/.
# Idempotent; set HALFTIME_SKIP_DEPLOY_TOOLS=1 to skip (the deploy tests
# then report themselves skipped).
"$(dirname "$0")/setup-deploy-tools.sh"
# <<< deploy tooling <<<
