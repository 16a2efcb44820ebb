#!/usr/bin/env bash
# Installs every build and test dependency of sdcpu from Debian packages. Idempotent: packages already
# present are skipped, so running it again costs a second.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev          # oneDNN: convolutions and matmuls
  ocl-icd-opencl-dev opencl-headers  # only so dnnl-config.cmake (which looks for OpenCL) configures
  libcli11-dev         # command-line parsing
  nlohmann-json3-dev   # config.json, safetensors headers, tokenizer vocab
  libfmt-dev libspdlog-dev
  libpng-dev           # PNG output with text chunks
  libgoogle-perftools-dev  # tcmalloc: reuses freed activation memory instead of page-faulting it in again
  libicu-dev           # Unicode normalization and character classes for the CLIP tokenizer
  libsqlite3-dev       # the service's embedded durable job queue
  libcpp-httplib-dev   # the service's HTTP server
  redis-server libhiredis-dev  # the service's shared queue across machines (tests start their own redis-server)
  nodejs curl          # service tests: the official OpenAI client (npm) and plain HTTP
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-numpy  # only to run ../shared/tools/make_random_sd.py for the full-size tests
  clang libclang-rt-14-dev  # libFuzzer and sanitizer runtimes
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all dependencies present"
fi
