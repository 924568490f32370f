#!/usr/bin/env bash
# MIB's yardstick on SmolLM2-135M (docs/mib-study.md): `compare` on IOI, Greater-Than and
# Docstring, CPR and CMD on 32 validation pairs (discovery on train), the bootstrap
# stability of the top 27 heads over 20 resamples, AUC against the replicated core
# circuit, and each method's MIB submission folder; 16 pairs for patching, EAP and EAP-IG
# (a 32-pair run reached 15.9 GB and was killed for memory beside other runs; docs/mib-study.md).
#   scripts/mib_study.sh OUT_DIR [TASK...]      (tasks: ioi gt docstring; default all)
#   METHODS=sae,patching,acdc,eap,eap-ig scripts/mib_study.sh ...   adds ACDC (heads mode,
#   three thresholds; it ran over 50 minutes on the 2-core VM without finishing)
#   MODEL=gemma-3-270m scripts/mib_study.sh ...   the same on Gemma 3 270M (its own
#   replicated cores: IOI core1, Greater-Than core4, Docstring core3)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/mib_study.sh OUT_DIR [TASK...]}
shift
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(ioi gt docstring)
bin=${HEADCODE_BIN:-target/release/headcode}
model=${MODEL:-smollm2-135m}
case $model in
  smollm2-135m) declare -A core=([ioi]=core2 [gt]=core5 [docstring]=core4) ;;
  gemma-3-270m) declare -A core=([ioi]=core1 [gt]=core4 [docstring]=core3) ;;
  *) echo "MODEL: smollm2-135m or gemma-3-270m (the models with replicated cores in data/circuits)" >&2; exit 2 ;;
esac
for t in "${tasks[@]}"; do
  methods=${METHODS:-sae,patching,eap,eap-ig}
  /usr/bin/time -v "$bin" compare "$model" --task "$t" \
    --circuit "data/circuits/$model-$t-patching-${core[$t]}.json" \
    --methods "$methods" --pairs 16 --split train --eval-pairs 32 --eval-split validation \
    --resamples 20 --acdc-granularity heads --acdc-thresholds 0.001,0.01,0.1 \
    --mib "$out/mib-$t" --out "$out/$t" --force --quiet 2>"$out/$t.time" | tee "$out/$t.log"
done
