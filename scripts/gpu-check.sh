#!/usr/bin/env bash
# One-shot GPU check, run on the GPU machine from the repo root, with a prebuilt
# `cargo build --release --features cuda` binary in gpu-bin (carried): stripped and
# gzipped as gpu-bin/headcode.gz, because the tree that travels to the device machine
# (tracked files + carried paths) must stay under 64 MiB and the stripped binary alone is
# 64.5 MB (16 MB gzipped). This script unpacks it to gpu-bin/headcode.
#   1. headcode selftest --device cuda          (every kernel vs the CPU reference, and
#      discover end to end, CPU vs CUDA, on a random GPT-2-small-shape model)
#   2. headcode bench for gpt2-small-shape and gpt2-xl-shape, and the baselines' unit
#      costs (ACDC, EAP)  (JSON in $OUT)
#   3. the PyTorch peer (shared/bench/peer_bench.py) on the same GPU  (JSON in $OUT)
#   4. a table: ours vs PyTorch, with ratios (also $OUT/compare.txt)
#   5. (stage llama8b, issue 24) `discover` end to end at Llama-3.1-8B's shape in bf16
#      (random weights drawn on the device; 250 IOI pairs = 500 prompts; per-stage time and
#      peak device memory), then the HF-transformers bf16 peer at the same shape
#      (scripts/peer_llama8b.py: o_proj pre-hooks, 1024 per-head SAEs, codes) in the same
#      call, and their ratio (also $OUT/compare_llama8b.txt). Not yet run on a GPU.
# Needs no network and builds nothing. Exit status: that of the self-test.
# HEADCODE_NO_GRAPHS=1 makes the batched SAE trainer launch kernels directly (no CUDA graph).
# STAGES picks what runs (default: all of "selftest small xl baselines peer"; "llama8b" only
# when named). Their time limits add up to more than one 600 s device call, so split them,
# e.g. STAGES="selftest small peer" in one call, STAGES="xl baselines" in the next and
# STAGES=llama8b in a third (L8B_TIMEOUT 300 + L8B_PEER_TIMEOUT 240 s).
# SELFTEST_TIMEOUT, SMALL_TIMEOUT, XL_TIMEOUT and PEER_TIMEOUT (seconds) override each
# step's limit, so a caller can give the last step whatever its device call has left;
# XL_ARGS adds bench options to the XL step (e.g. "--reps 3").
set -uo pipefail
OUT=${OUT:-out/gpu-check}
STAGES=" ${STAGES:-selftest small xl baselines peer} "
want() { [[ "$STAGES" == *" $1 "* ]]; }
# Seconds each step took, so the next device call can be planned within its time limit
# (also in $OUT/durations.txt).
took() { echo "--- $1 took $(($SECONDS - $2)) s (exit status $3)" | tee -a "$OUT/durations.txt"; }
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
PY=/opt/torch/.venv/bin/python
[ -x "$PY" ] || PY=python3
BIN=gpu-bin/headcode
if [ ! -x "$BIN" ] && [ -f "$BIN.gz" ]; then
    gunzip -c "$BIN.gz" >"$BIN" && chmod +x "$BIN"
fi
if [ ! -x "$BIN" ]; then
    echo "missing $BIN (cargo build --release --features cuda; strip and gzip -9 target/release/headcode into gpu-bin/headcode.gz)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"

selftest_rc=0
if want selftest; then
    echo "=== selftest ==="
    t0=$SECONDS
    timeout ${SELFTEST_TIMEOUT:-210} "$BIN" selftest --device cuda 2>&1 | tee "$OUT/selftest.log"
    selftest_rc=${PIPESTATUS[0]}
    took selftest $t0 $selftest_rc
    echo "selftest exit status: $selftest_rc"
fi

# Optional: SANITIZE=1 reruns the self-test under compute-sanitizer memcheck (slow; pass a
# quicker self-test through SANITIZE_ARGS, e.g. SANITIZE_ARGS=--quick if the CLI has it).
if [ "${SANITIZE:-0}" = 1 ]; then
    CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
    echo "=== compute-sanitizer memcheck ==="
    timeout 300 "$CS" --tool memcheck --leak-check no --error-exitcode 99 \
        "$BIN" selftest --device cuda ${SANITIZE_ARGS:-} 2>&1 | tail -40 | tee "$OUT/sanitizer.log"
fi

echo "=== bench (ours) ==="
if want small; then
    t0=$SECONDS
    timeout ${SMALL_TIMEOUT:-150} "$BIN" bench --device cuda --model gpt2-small-shape --json "$OUT/bench_small.json" 2>&1 | tee "$OUT/bench_small.log"
    took "bench small" $t0 ${PIPESTATUS[0]}
fi
if want xl; then
    t0=$SECONDS
    timeout ${XL_TIMEOUT:-130} "$BIN" bench --device cuda --model gpt2-xl-shape ${XL_ARGS:-} --json "$OUT/bench_xl.json" 2>&1 | tee "$OUT/bench_xl.log"
    took "bench xl" $t0 ${PIPESTATUS[0]}
fi
# The baselines' unit costs (ACDC head / edge test, EAP batch) with a CUDA-vs-CPU check.
if want baselines; then
    t0=$SECONDS
    timeout 150 "$BIN" bench --device cuda --baselines --reps 5 --json "$OUT/bench_baselines.json" 2>&1 | tee "$OUT/bench_baselines.log"
    took "bench baselines" $t0 ${PIPESTATUS[0]}
fi

if want llama8b; then
    echo "=== discover at llama-3.1-8b-shape, bf16 (ours, then HF transformers) ==="
    t0=$SECONDS
    timeout ${L8B_TIMEOUT:-300} "$BIN" bench --device cuda --model llama-3.1-8b-shape --dtype bf16 \
        --discover 250 --reps 3 --json "$OUT/bench_llama8b.json" 2>&1 | tee "$OUT/bench_llama8b.log"
    took "bench llama8b" $t0 ${PIPESTATUS[0]}
    t0=$SECONDS
    OUT="$OUT" PYTHONUNBUFFERED=1 timeout ${L8B_PEER_TIMEOUT:-240} "$PY" scripts/peer_llama8b.py 2>&1 | tee "$OUT/peer_llama8b.log"
    took "peer llama8b" $t0 ${PIPESTATUS[0]}
    "$PY" - "$OUT" <<'PYEOF' | tee "$OUT/compare_llama8b.txt"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception as e:
        print(f"(no {name}: {e})")
        return {}
ours, peer = load("bench_llama8b.json"), load("peer_llama8b.json")
d = ours.get("discover_cuda") or {}
fwd = ours.get("forward_hooks_candle_cuda") or {}
rows = peer.get("rows_ms", {})
def first(prefix):
    return next((v for k, v in rows.items() if k.startswith(prefix)), None)
def line(label, o, p):
    r = f"{p / o:8.1f}x" if (o and p) else "       -"
    f = lambda v: "        -" if v is None else f"{v:9.1f}"
    print(f"{label:<52} {f(o)} {f(p)} {r}")
print(f"llama-3.1-8b-shape, bf16, {ours.get('device', '?')}; peer: {peer.get('device', '?')}, torch {peer.get('torch', '?')}")
print(f"{'stage':<52} {'ours ms':>9} {'torch ms':>9} {'torch/ours':>9}")
line("forward + hooks, 500 prompts (kept on the device)", fwd.get("device_resident_ms"), first("hook 500"))
line("discover end to end vs hook + SAEs + codes", d.get("median_ms"), peer.get("total_ms"))
for k, v in sorted((d.get("stages_ms") or {}).items()):
    print(f"  ours: {k:<46} {v:9.1f}")
mem = d.get("memory") or {}
dev = mem.get("device_peak_bytes")
print(f"peak device memory: ours {dev / 1e9:.2f} GB (driver total - free, sampled)" if dev else "peak device memory: ours ?")
for s in mem.get("stages", []):
    if s.get("device_peak_bytes"):
        print(f"  {s['stage']:<20} {s['device_peak_bytes'] / 1e9:8.2f} GB")
p = peer.get("peak_allocated_bytes")
if p:
    print(f"peak memory, torch: {p / 1e9:.2f} GB allocated (max_memory_allocated)")
print("targets (issue 24): discover <= 2 s; peak device memory <= 24 GB; >= 5x faster than the peer")
PYEOF
fi

if want peer; then
    echo "=== peer (PyTorch) ==="
    PEER=""
    for p in shared/bench/peer_bench.py ../shared/bench/peer_bench.py gpu-bin/peer_bench.py; do
        if [ -f "$p" ]; then PEER=$p; break; fi
    done
    if [ -n "$PEER" ]; then
        t0=$SECONDS
        PYTHONUNBUFFERED=1 timeout ${PEER_TIMEOUT:-170} "$PY" "$PEER" 2>&1 | tee "$OUT/peer.log"
        took peer $t0 ${PIPESTATUS[0]}
    else
        echo "peer_bench.py not found (looked in shared/bench and ../shared/bench)" | tee "$OUT/peer.log"
    fi
fi

echo "=== ours vs PyTorch (same GPU) ==="
"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/compare.txt"
import json, os, re, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception as e:
        print(f"(no {name}: {e})")
        return None
small, xl = load("bench_small.json"), load("bench_xl.json")
peer = {}
try:
    for line in open(os.path.join(out, "peer.log")):
        m = re.match(r"\s*([0-9.]+) ms  (.*\S)\s*$", line)
        if m:
            peer[m.group(2)] = float(m.group(1))
except OSError:
    pass
with open(os.path.join(out, "peer.json"), "w") as f:
    json.dump(peer, f, indent=1)
def P(prefix):
    for k, v in peer.items():
        if k.startswith(prefix):
            return v
    return None
def S(rep, stage):
    if not rep:
        return None
    if stage in ("pipeline_shared_ms", "pipeline_per_head_z_ms"):
        return rep.get(stage)
    for s in rep.get("stages", []):
        if s["stage"] == stage:
            return s["median_ms"]
    return None
rows = [
    ("hook (ours: reduce+W_O only; torch: incl. GPT-2 forward)", "hook_result", "hook 500 prompts, one batch"),
    ("shared SAE 768->200, 500 steps (Auto's path)", "sae_shared", "shared SAE 768->200, 10x144"),
    ("shared SAE, torch CUDA graph", "sae_shared", "shared SAE 768->200 (1 SAE, 1440 vectors), CUDA graph"),
    ("shared SAE, ours tiled GEMMs vs torch CUDA graph", "sae_shared_tiled", "shared SAE 768->200 (1 SAE, 1440 vectors), CUDA graph"),
    ("shared SAE, ours cuBLAS FP32 vs torch CUDA graph", "sae_shared_cublas", "shared SAE 768->200 (1 SAE, 1440 vectors), CUDA graph"),
    ("shared SAE, ours cuBLAS TF32 vs torch CUDA graph", "sae_shared_cublas_tf32", "shared SAE 768->200 (1 SAE, 1440 vectors), CUDA graph"),
    ("144 per-head SAEs on z 64->200", "sae_per_head_z", "144 per-head SAEs on z 64->200 (bmm)"),
    ("144 per-head SAEs on z, torch CUDA graph", "sae_per_head_z", "144 per-head SAEs on z 64->200, CUDA graph"),
    ("per-head on z, ours untiled persistent vs torch graph", "sae_per_head_z_untiled", "144 per-head SAEs on z 64->200, CUDA graph"),
    ("144 per-head SAEs on result 768->200", "sae_per_head_result", "144 per-head SAEs 768->200 (bmm)"),
    ("144 per-head SAEs on result, torch CUDA graph", "sae_per_head_result", "144 per-head SAEs 768->200, CUDA graph"),
    ("per-head on result, ours cuBLAS TF32 vs torch graph", "sae_per_head_result_cublas_tf32", "144 per-head SAEs 768->200, CUDA graph"),
    ("encode+argmax+|P\\N|", "encode_argmax_score", "encode+argmax+|P\\N| (torch ops)"),
    ("pipeline (torch incl. forward)", "pipeline_shared_ms", "TOTAL batched PyTorch"),
]
def fmt(v):
    return "       -" if v is None else f"{v:9.3f}"
print(f"{'stage (gpt2-small shape)':<58} {'ours ms':>9} {'torch ms':>9} {'torch/ours':>10}")
for label, ours_key, peer_key in rows:
    o, p = S(small, ours_key), P(peer_key)
    ratio = f"{p / o:9.1f}x" if (o and p) else "         -"
    print(f"{label:<58} {fmt(o)} {fmt(p)} {ratio}")
fwd = (small or {}).get("forward_hooks_candle_cuda") or {}
sae, enc = S(small, "sae_shared"), S(small, "encode_argmax_score")
whole = (fwd["discover_ms"] + sae + enc) if (fwd.get("discover_ms") and sae and enc) else None
rows2 = [
    ("forward + hooks, kept on the device", fwd.get("device_resident_ms"), P("hook 500 prompts, one batch")),
    ("forward + hooks + compact logits (as discover)", fwd.get("discover_ms"), P("hook 500 prompts, one batch")),
    ("forward + hooks + full logits to host", fwd.get("full_logits_ms"), P("hook 500 prompts, one batch")),
    ("forward + hooks, TF32 GEMMs", fwd.get("tf32_device_resident_ms"), P("hook 500 prompts, one batch")),
    ("forward + hooks, all copied to host (collect)", fwd.get("host_copy_ms"), P("hook 500 prompts, one batch")),
    ("bare forward (no logits, nothing captured)", fwd.get("forward_only_ms"), None),
    ("  its FP32 floor (GEMM FLOPs at peak; bench::floor)", (fwd.get("fp32_floor") or {}).get("compute_ms"), None),
    ("whole: fwd+hooks (as discover) + shared SAE + codes", whole, P("TOTAL batched PyTorch")),
    ("discover --device cuda, shared SAE on result (paper)", ((small or {}).get("discover_cuda") or {}).get("shared_result", {}).get("median_ms"), P("TOTAL batched PyTorch")),
    ("discover --device cuda, per-head SAEs on z (default)", ((small or {}).get("discover_cuda") or {}).get("per_head_z", {}).get("median_ms"), P("TOTAL batched PyTorch")),
]
for label, o, p in rows2:
    ratio = f"{p / o:9.1f}x" if (o and p) else "         -"
    print(f"{label:<58} {fmt(o)} {fmt(p)} {ratio}")
print("\ntargets: hooks <= 10 ms; shared SAE <= 10 ms; per-head z <= 3 ms; whole pipeline <= 25 ms")
for name, rep in (("gpt2-small-shape", small), ("gpt2-xl-shape", xl)):
    if not rep:
        continue
    print(f"\n{name} on {rep['device']}: peak {rep['peak_mem_bytes'] / 2**20:.0f} MiB above baseline")
    for s in rep["stages"]:
        print(f"  {s['median_ms']:10.3f} ms  {s['stage']:<32} (n={s['reps']}) {s['detail']}")
    print(f"  {rep['pipeline_shared_ms']:10.3f} ms  pipeline shared SAE")
    print(f"  {rep['pipeline_per_head_z_ms']:10.3f} ms  pipeline per-head SAEs on z")
    lim = rep.get("device_limits")
    if lim:
        print(f"  hardware floors ({lim['sms']} SMs at {lim['clock_khz'] / 1e3:.0f} MHz, "
              f"DRAM {2 * lim['mem_clock_khz'] * 1e3 * lim['mem_bus_bits'] / 8 / 1e12:.2f} TB/s; GEMM FLOPs only):")
    for f in rep.get("floors", []):
        o = S(rep, f["stage"])
        dram = f["dram_ms"]
        floor = max(f["compute_ms"], dram or 0.0)
        ratio = f"{o / floor:.1f}x the floor" if (o and floor) else "-"
        waves = f.get("compute_one_block_per_sae_ms")
        waves = "" if waves is None else f" (one block per SAE {waves:.3f})"
        print(f"    {f['stage']:<22} compute {f['compute_ms']:8.3f} ms{waves}, DRAM "
              f"{'-' if dram is None else f'{dram:.2f}'} ms; ours {fmt(o)} ms = {ratio}")
    # Where a batched step's time goes (no graph; launch gaps count to the next kernel).
    for b in rep.get("step_breakdown", []):
        if b.get("error"):
            print(f"  step breakdown {b['stage']} ({b['path']}): failed: {b['error']}")
            continue
        top = sorted(b["kernels"], key=lambda k: -k["median_us"])[:6]
        print(f"  step breakdown {b['stage']} ({b['path']}): {b['step_us']:.1f} us/step; "
              + ", ".join(f"{k['kernel']} {k['median_us']:.1f}" for k in top))
    # Where a persistent trainer's step goes (thread 0's clock64 after each phase barrier).
    for c in rep.get("phase_clocks", []):
        p = c.get("profile")
        if not p:
            print(f"  phase clocks {c['stage']}: failed: {c.get('error')}")
            continue
        top = sorted(p["phases"], key=lambda x: -x["mean_cycles"])
        print(f"  phase clocks {c['stage']} ({p['kernel']}, {p['blocks']} blocks, {p['waves']} wave(s), "
              f"{p['cycles_per_ns']:.2f} GHz): {p['step_us']:.2f} us/step; "
              + ", ".join(f"{x['phase']} {x['mean_us']:.2f}" for x in top))
PYEOF
exit "$selftest_rc"
