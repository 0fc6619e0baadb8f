#!/usr/bin/env bash
# Proves scripts/setup.sh's fresh-machine path without a fresh machine: its detection is run
# against an empty PATH and empty library folders (a bare machine), and against a machine that
# has libclang-cpp but not libclang (the fault that once hid behind a green CI). Each must list
# every package the build needs. Fails, naming what is missing, otherwise. Run by .ci/run.
set -euo pipefail
cd "${BASH_SOURCE[0]%/*}/.."
bash_bin=$(command -v bash)

# What a bare Debian machine needs for `scripts/setup.sh && cargo test` (the Rust toolchain aside).
needed=("apt cmake" "apt g++" "apt python3" "apt python3-pip" "apt libclang-dev" "apt slurm-wlm" "apt munge" "pip rust-just" "pip mitreattack-python")

empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
mkdir -p "$empty/bin" "$empty/lib" "$empty/llvm"

check() { # check NAME EXPECTED... <<< output
  local name="$1"; shift
  local out; out=$(cat)
  local missing=()
  for want in "$@"; do
    grep -qxF "$want" <<<"$out" || missing+=("$want")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test-setup: on $name, setup would not install: ${missing[*]}" >&2
    echo "it would install:" >&2; echo "$out" >&2
    exit 1
  fi
  echo "test-setup: $name: setup installs ${*}"
}

# 1. A bare machine: nothing on PATH, no libraries.
SETUP_LIBDIRS="$empty/lib" PATH="$empty/bin" "$bash_bin" scripts/setup.sh --dry-run \
  | check "a bare machine" "${needed[@]}"

# 2. libclang-cpp (installed with other LLVM tools) is not libclang: bindgen cannot use it.
touch "$empty/llvm/libclang-cpp.so.14" "$empty/lib/libclang-cpp.so.14"
SETUP_LIBDIRS="$empty/lib $empty/llvm" PATH="$empty/bin" "$bash_bin" scripts/setup.sh --dry-run \
  | check "a machine with only libclang-cpp" "apt libclang-dev"

# 3. A versioned libclang (Debian's libclang1-14 ships libclang-14.so.1) counts.
touch "$empty/llvm/libclang-14.so.1"
out=$(SETUP_LIBDIRS="$empty/lib $empty/llvm" PATH="$empty/bin" "$bash_bin" scripts/setup.sh --dry-run)
if grep -qx "apt libclang-dev" <<<"$out"; then
  echo "test-setup: libclang-14.so.1 was not recognised as libclang" >&2
  exit 1
fi
echo "test-setup: libclang-14.so.1 counts as libclang"

# 4. This machine, after setup: nothing left to install.
if [ "${1:-}" = "--after-setup" ]; then
  out=$(bash scripts/setup.sh --dry-run)
  if [ -n "$out" ]; then
    echo "test-setup: after setup, still missing: $out" >&2
    exit 1
  fi
  echo "test-setup: this machine has everything setup installs"
fi
