#!/usr/bin/env bash
# MIB's yardstick on SmolLM2-135M (docs/mib-study.md): `compare` on IOI, Greater-Than and
# Docstring with every method, CPR and CMD on 32 validation pairs (discovery on train), the
# bootstrap stability of the top 27 heads over 20 resamples, AUC against the replicated
# core circuit, and each method's MIB submission folder.
#   scripts/mib_study.sh OUT_DIR [TASK...]      (tasks: ioi gt docstring; default all)
# ACDC runs on IOI only, in heads mode with three thresholds: one full sweep costs about
# 4 minutes per threshold on a 2-core CPU (docs/compare.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/mib_study.sh OUT_DIR [TASK...]}
shift
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(ioi gt docstring)
bin=${HEADCODE_BIN:-target/release/headcode}
declare -A core=([ioi]=core2 [gt]=core5 [docstring]=core4)
for t in "${tasks[@]}"; do
  methods=sae,patching,eap,eap-ig
  [ "$t" = ioi ] && methods=sae,patching,acdc,eap,eap-ig
  /usr/bin/time -v "$bin" compare smollm2-135m --task "$t" \
    --circuit "data/circuits/smollm2-135m-$t-patching-${core[$t]}.json" \
    --methods "$methods" --pairs 32 --split train --eval-pairs 32 --eval-split validation \
    --resamples 20 --acdc-granularity heads --acdc-thresholds 0.001,0.01,0.1 \
    --mib "$out/mib-$t" --out "$out/$t" --force --quiet 2>"$out/$t.time" | tee "$out/$t.log"
done
