"""The PyTorch peer of `headcode bench --forward` on the CPU.

HF transformers runs the same token ids in the same batches (right-padded, with an
attention mask), on the same number of threads, with a forward pre-hook on every layer's
`o_proj` that takes its input (the heads' z), averages it over each prompt's real
positions and projects each head by its slice of W_O, as headcode's hooks do. Two forwards
are timed:
  full: `model(ids, attention_mask)`, logits at every position (what a user's hooked
        forward computes, and what the issue measured);
  last: the decoder stack, then the final norm and `lm_head` on each prompt's last real
        row only (the logits the task metric reads, as headcode computes them).
It also times a 2048^3 f32 `torch.mm`, the rate PyTorch's GEMM reaches on this machine.

  headcode bench --device cpu --model smollm2-135m --forward ioi --prompts 500 \\
      --save-tokens tokens.json --json headcode.json
  python3 scripts/peer_cpu_forward.py --tokens tokens.json --headcode headcode.json

Pinned: torch 2.11.0, transformers 4.57.6, accelerate 1.12.0 and gguf 0.19.0
(transformers dequantises the GGUF to f32 when it loads it). Run it right after headcode
on a quiet machine: the ratio means something only when both ran on the same cores under
the same load.
"""
import argparse
import json
import os
import statistics
import time

import torch

DEFAULT_GGUF = os.path.expanduser(
    "~/.cache/headcode/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
)


def median_ms(fn, reps):
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", required=True, help="headcode bench --save-tokens output")
    ap.add_argument("--gguf", default=DEFAULT_GGUF, help="the model's GGUF file")
    ap.add_argument("--headcode", help="headcode bench --json output, for the ratios")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", help="write the timings here")
    a = ap.parse_args()

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    saved = json.load(open(a.tokens))
    tokens, batch = saved["tokens"], saved["batch"]
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf), dtype=torch.float32
    ).eval()
    cfg = model.config
    heads, dh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    layers = model.model.layers
    # W_O per head: o_proj.weight is [d_model, heads·d_head] (y = x Wᵀ) -> [heads, d_head, d_model]
    w_o = [l.self_attn.o_proj.weight.detach().t().reshape(heads, dh, -1) for l in layers]

    caught = {}

    def hook(i):
        def pre(_mod, args):
            caught[i] = args[0]  # [B, T, heads·d_head]

        return pre

    for i, l in enumerate(layers):
        l.self_attn.o_proj.register_forward_pre_hook(hook(i))

    chunks = []
    for s in range(0, len(tokens), batch):
        part = tokens[s : s + batch]
        t = max(map(len, part))
        ids = torch.zeros(len(part), t, dtype=torch.long)
        mask = torch.zeros(len(part), t, dtype=torch.long)
        for r, seq in enumerate(part):
            ids[r, : len(seq)] = torch.tensor(seq)
            mask[r, : len(seq)] = 1
        lengths = mask.sum(1)
        chunks.append((ids, mask, lengths))

    def hooks_of(mask, lengths):
        w = mask.float() / lengths[:, None].float()  # mean over real positions
        zs, rs = [], []
        for i in range(len(layers)):
            z = caught[i]
            zm = torch.einsum("bt,btd->bd", w, z).reshape(z.shape[0], heads, dh)
            zs.append(zm)
            rs.append(torch.einsum("bhd,hde->bhe", zm, w_o[i]))
        return torch.stack(zs, 1), torch.stack(rs, 1)

    def full():
        with torch.inference_mode():
            for ids, mask, lengths in chunks:
                model(input_ids=ids, attention_mask=mask)
                hooks_of(mask, lengths)

    def last():
        with torch.inference_mode():
            for ids, mask, lengths in chunks:
                h = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
                rows = h[torch.arange(h.shape[0]), lengths - 1]
                model.lm_head(rows)
                hooks_of(mask, lengths)

    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    mm_ms = median_ms(lambda: torch.mm(x, y), a.reps)
    gflops = 2 * n**3 / (mm_ms / 1e3) / 1e9
    full_ms = median_ms(full, a.reps)
    last_ms = median_ms(last, a.reps)
    n_tok = sum(map(len, tokens))
    print(
        f"PyTorch {torch.__version__} CPU peer, {len(tokens)} prompts ({n_tok} tokens), "
        f"batch {batch}, {a.threads} threads, median of {a.reps}"
    )
    print(f"  torch.mm {n}^3 f32                  {gflops:10.1f} GFLOP/s")
    print(f"  forward + hooks, all logits        {full_ms:10.1f} ms")
    print(f"  forward + hooks, last logits only  {last_ms:10.1f} ms")
    out = {
        "torch": torch.__version__,
        "threads": a.threads,
        "prompts": len(tokens),
        "tokens": n_tok,
        "batch": batch,
        "mm_gflops": gflops,
        "forward_hooks_all_logits_ms": full_ms,
        "forward_hooks_last_logits_ms": last_ms,
    }
    if a.headcode:
        hc = json.load(open(a.headcode))
        ms = hc["forward_hooks_ms"]
        print(f"  headcode forward + hooks           {ms:10.1f} ms")
        print(f"  PyTorch (all logits) / headcode:   {full_ms / ms:.2f}x")
        print(f"  PyTorch (last logits) / headcode:  {last_ms / ms:.2f}x")
        print(f"  headcode / its GEMM floor:         {ms / hc['floor_ms']:.2f}x")
        out["headcode_forward_hooks_ms"] = ms
        out["speedup_vs_all_logits"] = full_ms / ms
        out["speedup_vs_last_logits"] = last_ms / ms
    if a.json:
        json.dump(out, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
